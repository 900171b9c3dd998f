"""Location-ping throughput against a running engine: many drivers, each pinging in a loop.

    python benchmarks/location_pings.py --api http://127.0.0.1:8000 --token ADMIN_TOKEN

Bounded in time (--duration) and aimed only at the URL given (use loopback). Prints the
achieved pings per second and latency percentiles; the client shares the machine's cores
with the engine, so on a small machine the numbers are a floor, not a ceiling.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import random
import statistics
import time

import requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", default="http://127.0.0.1:8000")
    parser.add_argument("--token", required=True, help="an admin token")
    parser.add_argument("--drivers", type=int, default=64)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()

    admin = requests.Session()
    admin.headers["Authorization"] = f"Bearer {args.token}"
    tokens = [admin.post(f"{args.api}/v1/users", json={"name": f"pinger-{i}", "role": "driver"},
                         timeout=10).json()["token"] for i in range(args.drivers)]
    deadline = time.monotonic() + args.duration

    def pinger(worker: int) -> list[float]:
        http, rng, latencies = requests.Session(), random.Random(worker), []
        mine = tokens[worker::args.threads]
        while time.monotonic() < deadline:
            token = rng.choice(mine)
            started = time.perf_counter()
            response = http.put(f"{args.api}/v1/drivers/me/location", timeout=10,
                                headers={"Authorization": f"Bearer {token}"},
                                json={"lat": 38.7 + rng.random() / 10,
                                      "lng": -9.1 - rng.random() / 10})
            response.raise_for_status()
            latencies.append(time.perf_counter() - started)
        return latencies

    started = time.monotonic()
    with cf.ThreadPoolExecutor(args.threads) as pool:
        latencies = sorted(x for part in pool.map(pinger, range(args.threads)) for x in part)
    elapsed = time.monotonic() - started
    q = statistics.quantiles(latencies, n=100)
    print(f"{len(latencies)} pings in {elapsed:.1f} s: {len(latencies) / elapsed:.0f} pings/s; "
          f"latency p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms")


if __name__ == "__main__":
    main()
