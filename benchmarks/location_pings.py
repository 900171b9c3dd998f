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

from smartroute_sim.client import Api


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", default="http://127.0.0.1:8000")
    parser.add_argument("--token", required=True, help="an admin token")
    parser.add_argument("--drivers", type=int, default=64)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()

    api = Api(args.api)
    admin = api.with_token(args.token)
    tokens = [admin.create_user("driver", f"pinger-{i}")[1] for i in range(args.drivers)]
    deadline = time.monotonic() + args.duration

    def pinger(worker: int) -> list[float]:
        rng, latencies = random.Random(worker), []
        mine = tokens[worker :: args.threads]
        while time.monotonic() < deadline:
            token = rng.choice(mine)
            started = time.perf_counter()
            response = api.call(
                "PUT",
                "/v1/drivers/me/location",
                token=token,
                json={"lat": 38.7 + rng.random() / 10, "lng": -9.1 - rng.random() / 10},
            )
            response.raise_for_status()
            latencies.append(time.perf_counter() - started)
        return latencies

    started = time.monotonic()
    with cf.ThreadPoolExecutor(args.threads) as pool:
        latencies = sorted(x for part in pool.map(pinger, range(args.threads)) for x in part)
    elapsed = time.monotonic() - started
    q = statistics.quantiles(latencies, n=100)
    print(
        f"{len(latencies)} pings in {elapsed:.1f} s: {len(latencies) / elapsed:.0f} pings/s; "
        f"latency p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
