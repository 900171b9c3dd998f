"""How much of the machine Celery's no-op ceiling uses while it drains.

    python benchmarks/ceiling_cpu.py --tasks 3000,6000

Runs the same measurement as ``bench e2e``'s ``celery_noop_ceiling`` (smartroute_sim.
ceiling: a queue of no-op tasks, a worker with the engine's settings and two processes)
on the embedded Redis in ``.smartroute/bench``, and reads the machine's CPU counters while
it drains. Prints the drain rate, how busy both cores were, and CPU per task: whether the
ceiling is bound by CPU or by round trips to the broker (prefetch 1, late acks).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from smartroute.infra.embedded import ensure_services  # noqa: E402
from smartroute.infra.settings import Settings  # noqa: E402
from smartroute_sim import ceiling  # noqa: E402

EVERY_S = 0.05


def machine_seconds() -> tuple[float, float]:
    """CPU seconds so far over every core: (busy, idle)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq, t.idle + t.iowait


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="3000,6000")
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    services = ensure_services(None, None, Path(".smartroute/bench"))
    broker = Settings.from_env({"REDIS_URL": services.redis_url}).celery_broker_url
    readings: list[tuple[float, float, float]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(EVERY_S):
            readings.append((time.monotonic(), *machine_seconds()))

    threading.Thread(target=watch, daemon=True).start()
    try:
        for tasks in (int(n) for n in args.tasks.split(",")):
            readings.clear()
            measured = ceiling.measure(broker, args.concurrency, tasks)
            end = time.monotonic()
            inside = [r for r in readings if end - measured.seconds <= r[0] <= end]
            busy = inside[-1][1] - inside[0][1]
            idle = inside[-1][2] - inside[0][2]
            print(
                f"{measured.done} no-op tasks in {measured.seconds:.2f} s: "
                f"{measured.per_s:.0f}/s; both cores {100 * busy / (busy + idle):.0f} % busy; "
                f"{1000 * busy / measured.done:.2f} ms of CPU per task"
            )
    finally:
        stop.set()


if __name__ == "__main__":
    main()
