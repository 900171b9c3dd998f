"""Where the engine's time goes under ``smartroute bench e2e``: py-spy on every engine process.

    .venv/bin/pip install -r requirements-dev.txt     # py-spy
    python benchmarks/profile_e2e.py --rate 8 --duration 60 --record 20

Starts ``smartroute bench e2e`` (which starts its own ``smartroute up``), waits until
bookings are flowing through the engine, then samples each engine process (API workers,
Celery worker processes, relay, beat) with ``py-spy record --format raw`` for ``--record``
seconds at once. Prints, per role, how busy it was (non-idle samples over the samples
possible) and the functions with the most inclusive and self time; the raw collapsed
stacks stay in ``--out`` for flame graphs. Bounded: the run's own duration and drain.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from smartroute_sim.engine import engine_processes  # noqa: E402

RATE_HZ = 100


def summarise(path: Path, seconds: float, top: int) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        total += n
        for frame in set(frames):
            inclusive[_short(frame)] += n
        if frames:
            leaf[_short(frames[-1])] += n
    possible = seconds * RATE_HZ
    lines = [f"  busy {100 * total / possible:.0f}% of one core ({total} samples)"]
    lines += [f"  incl {100 * n / max(1, total):5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    lines += [f"  self {100 * n / max(1, total):5.1f}%  {f}" for f, n in leaf.most_common(top)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module.py)": lines vary within a function.
    name, _, where = frame.partition(" (")
    module = where.rsplit("/", 1)[-1].split(":", 1)[0]
    return f"{name} ({module})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", default="8")
    parser.add_argument("--duration", default="60")
    parser.add_argument("--record", type=float, default=20.0)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--out", default=".smartroute/bench/profile")
    parser.add_argument(
        "--gil",
        action="store_true",
        help="sample only threads holding the GIL: Python on the CPU, not waiting on I/O",
    )
    # Anything else goes to `bench e2e` as it is (say, --driver-actions http --drivers 400).
    args, bench_args = parser.parse_known_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bench = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "smartroute",
            "bench",
            "e2e",
            "--rate",
            args.rate,
            "--duration",
            args.duration,
            "--ceiling-tasks",
            "500",
            "--json",
            *bench_args,
        ],
        stdout=open(out / "e2e.json", "w"),  # noqa: SIM115 - the child holds it until it exits
        stderr=open(out / "e2e.log", "w"),  # noqa: SIM115
    )
    engine_log = Path(".smartroute/bench/engine.log")
    started, launched = time.monotonic(), time.time()
    # The engine logs every dispatched batch: the first one after this run began means load.
    # There is no event to wait on across processes, so poll the log, bounded.
    while time.monotonic() - started < 300:
        if bench.poll() is not None:
            raise SystemExit("bench e2e ended before the load began; see e2e.log")
        # The log is truncated when the engine starts, so after launch it holds only this run.
        if (
            engine_log.exists()
            and engine_log.stat().st_ctime > launched
            and "batch dispatched" in engine_log.read_text(errors="replace")
        ):
            break
        time.sleep(0.5)
    root = psutil.Process(bench.pid)
    spies = []
    for role, process in engine_processes(root.pid):
        target = out / f"{role}-{process.pid}.txt"
        spies.append(
            (
                role,
                process.pid,
                target,
                subprocess.Popen(
                    [
                        str(Path(sys.executable).with_name("py-spy")),
                        "record",
                        "--pid",
                        str(process.pid),
                        "--duration",
                        str(int(args.record)),
                        "--rate",
                        str(RATE_HZ),
                        "--format",
                        "raw",
                        "--nonblocking",
                        *(["--gil"] if args.gil else []),
                        "--output",
                        str(target),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                ),
            )
        )
    for _, _, _, spy in spies:
        spy.wait()
    bench.wait()
    for role, pid, target, _ in sorted(spies):
        if target.exists() and target.stat().st_size:
            print(f"{role} (pid {pid})\n{summarise(target, args.record, args.top)}\n")
    print((out / "e2e.json").read_text())


if __name__ == "__main__":
    main()
