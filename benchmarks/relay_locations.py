"""What a location ping over the relay costs the relay, in CPU time.

    python benchmarks/relay_locations.py --drivers 50 --pings 200

Starts a relay (``python -m smartroute.cli.relay``) on the embedded PostgreSQL and Redis in
``.smartroute/bench``, connects ``--drivers`` drivers over WebSocket, and has each send
``--pings`` ``location`` events as fast as it can (no acknowledgement). Reads the relay's CPU
time (user + system, /proc via psutil) before and after the relay has counted every ping, less
what it spends idle over the same time (its tick, flush and token revalidation loops), and
prints milliseconds of relay CPU per ping. ``--profile`` runs the relay under cProfile and
prints where its time went. The client shares the machine's cores with the relay.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from relay_sockets import (  # noqa: E402
    SECRET,
    connect,
    drivers_with_tokens,
    free_port,
    wait_for_relay,
)

from smartroute.cli.processes import relay_argv  # noqa: E402
from smartroute.infra.embedded import ensure_services  # noqa: E402

METRICS_TOKEN = "relay-locations-benchmark-metrics-token"
IDLE_S = 3.0


def frame(payload: bytes) -> bytes:
    """A masked (with a zero mask) WebSocket text frame."""
    if len(payload) < 126:
        head = bytes([0x81, 0x80 | len(payload)])
    else:
        head = bytes([0x81, 0x80 | 126]) + len(payload).to_bytes(2, "big")
    return head + b"\0\0\0\0" + payload


def pings_counted(port: int) -> float:
    text = requests.get(
        f"http://127.0.0.1:{port}/metrics",
        headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
        timeout=10,
    ).text
    for line in text.splitlines():
        if line.startswith("smartroute_relay_location_pings_total "):
            return float(line.split()[1])
    return 0.0


def cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drivers", type=int, default=50)
    parser.add_argument("--pings", type=int, default=200, help="pings per driver")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    services = ensure_services(None, None, Path(".smartroute/bench"))
    relay = None
    try:
        tokens = drivers_with_tokens(services.database_url, args.drivers)
        import psycopg2

        with psycopg2.connect(services.database_url) as conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO drivers (user_id) SELECT id FROM users WHERE role = 'driver' "
                "ON CONFLICT DO NOTHING"
            )
        env = {
            **os.environ,
            "DATABASE_URL": services.database_url,
            "REDIS_URL": services.redis_url,
            "SMARTROUTE_SECRET_KEY": SECRET,
            "SMARTROUTE_METRICS_TOKEN": METRICS_TOKEN,
            "SMARTROUTE_LOG_LEVEL": "WARNING",
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        port = free_port()
        argv = relay_argv("127.0.0.1", port)
        profile = Path(tempfile.mkdtemp()) / "relay.prof"
        if args.profile:
            # cProfile runs the relay's module as __main__, as ``python -m`` does.
            argv = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", argv[2], *argv[3:]]
        relay = subprocess.Popen(argv, env=env, start_new_session=True)
        wait_for_relay(port, relay)
        process = psutil.Process(relay.pid)
        sockets = [connect(port, token, 10.0) for token in tokens]

        idle_from = cpu_s(process)
        time.sleep(IDLE_S)
        idle_per_s = (cpu_s(process) - idle_from) / IDLE_S

        now = time.time()
        messages = [
            [
                frame(
                    b"42"
                    + json.dumps(
                        ["location", {"lat": 38.7 + n / 1e5, "lng": -9.1, "at": now + n / 100}]
                    ).encode()
                )
                for n in range(args.pings)
            ]
            for _ in sockets
        ]
        total = args.drivers * args.pings
        before, started = cpu_s(process), time.monotonic()

        def send(i: int) -> None:
            for message in messages[i]:
                sockets[i].sendall(message)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(send, range(len(sockets))))
        while pings_counted(port) < total:
            if time.monotonic() - started > 300:
                raise SystemExit(f"only {pings_counted(port)} of {total} pings counted")
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        used = cpu_s(process) - before - idle_per_s * elapsed
        print(
            f"{total} pings from {args.drivers} drivers in {elapsed:.2f} s "
            f"({total / elapsed:.0f}/s): relay CPU {used:.2f} s, "
            f"{1000 * used / total:.3f} ms a ping (idle: {1000 * idle_per_s:.1f} ms/s)"
        )
        for sock in sockets:
            sock.close()
    finally:
        if relay is not None and relay.poll() is None:
            relay.terminate()
            relay.wait(timeout=30)
        services.stop()
    if args.profile and profile.exists():
        pstats.Stats(str(profile)).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
