"""Push latency: from an assignment's commit to the driver's Socket.IO client receiving it.

    SMARTROUTE_BOOKING_LIMIT_PER_ADDRESS=100000/minute smartroute up --port 8000 &
    python benchmarks/push_latency.py --api http://127.0.0.1:8000 \\
        --relay http://127.0.0.1:8001 --token "$(cat .smartroute/admin_token)"

For each rate, it brings rate × duration drivers online at one spot, connects each as a
real Socket.IO client, books at that rate (open loop) for the duration, and measures, per
``new_assignment``, the time from the offer's ``assigned_at`` (stamped in the committing
transaction) to its arrival. Bounded in time, aimed only at the URLs given (loopback).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import statistics
import threading
import time

import requests
import socketio

PICKUP = {"lat": 38.7223, "lng": -9.1393}
TRIP = {"pickup": PICKUP, "dropoff": {"lat": 38.75, "lng": -9.15}}


def _user(api: str, admin: requests.Session, role: str, name: str) -> tuple[int, str]:
    created = admin.post(f"{api}/v1/users", json={"name": name, "role": role}, timeout=10)
    created.raise_for_status()
    body = created.json()
    return body["id"], body["token"]


def run(api: str, relay: str, admin_token: str, rate: float, duration: float) -> dict:
    admin = requests.Session()
    admin.headers["Authorization"] = f"Bearer {admin_token}"
    count = int(rate * duration)
    latencies: list[float] = []
    done = threading.Event()
    lock = threading.Lock()
    clients = []

    def on_assignment(data):
        received = time.time()
        assigned = dt.datetime.fromisoformat(data["assigned_at"]).timestamp()
        with lock:
            latencies.append(received - assigned)
            if len(latencies) >= count:
                done.set()

    def bring_online(i: int):
        _, token = _user(api, admin, "driver", f"bench-driver-{i}")
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {token}"
        http.put(f"{api}/v1/drivers/me/location", json=PICKUP, timeout=10).raise_for_status()
        http.put(f"{api}/v1/drivers/me/status", json={"status": "available"},
                 timeout=10).raise_for_status()
        client = socketio.Client(reconnection=False)
        client.on("new_assignment", on_assignment)
        client.connect(relay, auth={"token": token}, transports=["websocket"], wait_timeout=10)
        return client

    with cf.ThreadPoolExecutor(16) as pool:
        clients = list(pool.map(bring_online, range(count)))
    riders = []
    for i in range(max(1, count // 10)):
        _, token = _user(api, admin, "rider", f"bench-rider-{i}")
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        riders.append(session)

    started = time.monotonic()
    with cf.ThreadPoolExecutor(32) as pool:
        futures = []
        for i in range(count):
            # Open loop: the i-th booking leaves at i / rate, whatever the answers do.
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(riders[i % len(riders)].post, f"{api}/v1/bookings",
                                       json=TRIP, timeout=10))
        for future in futures:
            future.result().raise_for_status()
    done.wait(timeout=30)
    for client in clients:
        client.disconnect()
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {"rate": rate, "assignments": count, "received": len(latencies),
            "p50_ms": round(q[49] * 1000, 1), "p99_ms": round(q[98] * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", default="http://127.0.0.1:8000")
    parser.add_argument("--relay", default="http://127.0.0.1:8001")
    parser.add_argument("--token", required=True, help="an admin token")
    parser.add_argument("--rates", default="50,200")
    parser.add_argument("--duration", type=float, default=2.0)
    args = parser.parse_args()
    for rate in (float(r) for r in args.rates.split(",")):
        r = run(args.api, args.relay, args.token, rate, args.duration)
        print(f"{r['rate']:g} assignments/s: {r['received']}/{r['assignments']} received, "
              f"push latency p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms")


if __name__ == "__main__":
    main()
