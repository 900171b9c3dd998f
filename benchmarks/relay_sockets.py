"""How many idle, authenticated Socket.IO connections a relay holds, and what each costs.

    python benchmarks/relay_sockets.py --modes eventlet,threading --sockets 500,2000

For each async mode, starts a relay (``python -m smartroute.cli.relay``) on the embedded
PostgreSQL and Redis in ``.smartroute/bench``, opens the given numbers of WebSocket
connections one after another, each completing the Socket.IO CONNECT with its own token, and
holds them open. Prints how many the relay accepted, the connect times, the relay's RSS and
thread count, and RSS per connection above a baseline of 10 connections. Every connection is
closed and the relay stopped before the next count; nothing runs longer than ``--timeout-s``
per connection, and the whole run is over well before the relay's 60 s ping timeout. Then
prints the relay's RSS once they have left, 30 s and 60 s later.

    python benchmarks/relay_sockets.py --modes eventlet --sockets 800 --burst 200

connects 800 drivers 200 at a time instead, each asking for a replay as a driver whose relay
restarted does, and prints how many the relay refused, and why.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from smartroute.cli.processes import relay_argv  # noqa: E402
from smartroute.infra import migrate  # noqa: E402
from smartroute.infra.embedded import ensure_services  # noqa: E402

BASELINE = 10
SECRET = "relay-sockets-benchmark-secret-0123456789abcdef"


def drivers_with_tokens(database_url: str, count: int) -> list[str]:
    """``count`` driver users, each with an opaque token live in the database (the relay
    asks PostgreSQL about every token it is shown)."""
    import hashlib

    import psycopg2

    migrate.upgrade(database_url)
    conn = psycopg2.connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO users (name, role) SELECT 'bench-relay-driver', 'driver' "
                "FROM generate_series(1, %s) RETURNING id",
                (count,),
            )
            ids = [row[0] for row in cur.fetchall()]
            tokens = [f"bench-relay-driver-{user_id}" for user_id in ids]
            cur.executemany(
                "INSERT INTO access_tokens (user_id, token_hash) VALUES (%s, %s)",
                [
                    (user_id, hashlib.sha256(token.encode()).hexdigest())
                    for user_id, token in zip(ids, tokens, strict=True)
                ],
            )
    finally:
        conn.close()
    return tokens


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_frame(sock: socket.socket, buffer: bytes) -> tuple[bytes, bytes]:
    """One unmasked server frame's payload (short frames only: OPEN and CONNECT)."""
    while len(buffer) < 2 or len(buffer) < 2 + (buffer[1] & 127):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionResetError("the relay hung up")
        buffer += chunk
    length = buffer[1] & 127
    if length >= 126:
        raise ValueError("an unexpectedly long frame")
    return buffer[2 : 2 + length], buffer[2 + length :]


def connect(
    port: int, token: str, timeout_s: float, last_event_id: int | None = None
) -> socket.socket:
    """A WebSocket connection with its Socket.IO CONNECT accepted (replaying what followed
    ``last_event_id``, if given, as a driver reconnecting does)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionResetError("the relay hung up during the handshake")
        buffer += chunk
    head, buffer = buffer.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
    opened, buffer = read_frame(sock, buffer)
    assert opened.startswith(b"0"), opened
    auth: dict = {"token": token}
    if last_event_id is not None:
        auth["last_event_id"] = last_event_id
    payload = b"40" + json.dumps(auth).encode()
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
    accepted, buffer = read_frame(sock, buffer)
    while accepted.startswith(b"42"):  # A replayed event, or resync_required, comes first.
        if b"replay_unavailable" in accepted:
            raise ConnectionError("connected, but the replay was unavailable")
        accepted, buffer = read_frame(sock, buffer)
    if not accepted.startswith(b"40{"):
        raise ConnectionError(accepted.decode(errors="replace"))
    return sock


def connect_at_once(
    port: int, tokens: list[str], at_once: int, timeout_s: float, held: list[socket.socket]
) -> None:
    """Connects with every token, ``at_once`` at a time, each asking for a replay (a
    relay's restart brings its drivers back so), and prints what the relay refused."""
    errors: dict[str, int] = {}
    times: list[float] = []

    def one(token: str) -> None:
        began = time.monotonic()
        try:
            held.append(connect(port, token, timeout_s, last_event_id=0))
            times.append(time.monotonic() - began)
        except (OSError, ValueError) as exc:
            key = f"{exc.__class__.__name__} {str(exc)[:80]}"
            errors[key] = errors.get(key, 0) + 1

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(at_once) as pool:
        list(pool.map(one, tokens))
    elapsed = time.monotonic() - start
    times.sort()
    print(
        f"burst: {len(tokens)} asked, {at_once} at once: {len(held)} held, "
        f"{sum(errors.values())} failed in {elapsed:.1f} s; connect median "
        f"{1000 * statistics.median(times or [0]):.0f} ms, max {1000 * max(times or [0]):.0f} ms"
    )
    for error, count in sorted(errors.items(), key=lambda item: -item[1]):
        print(f"  {count} x {error}")


def wait_for_relay(port: int, relay: subprocess.Popen, what: str = "") -> None:
    """Until the relay on ``port`` answers /health; stops the benchmark if it never does."""
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline or relay.poll() is not None:
            raise SystemExit(f"the relay did not start {what}".rstrip())
        time.sleep(0.2)


def wait_until_idle(port: int, timeout_s: float = 120) -> None:
    """Until a connection is accepted at once again (the relay has handled the closes: ten
    thousand of them take a while)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        began = time.monotonic()
        try:
            requests.get(f"http://127.0.0.1:{port}/health", timeout=deadline - began)
        except requests.RequestException:
            continue
        if time.monotonic() - began < 0.05:
            break
    time.sleep(2)


def measure(
    env: dict, mode: str, count: int, tokens: list[str], timeout_s: float, burst: int = 0
) -> None:
    port = free_port()
    relay = subprocess.Popen(
        relay_argv("127.0.0.1", port),
        env={**env, "SMARTROUTE_RELAY_ASYNC_MODE": mode},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    held: list[socket.socket] = []
    try:
        wait_for_relay(port, relay, f"({mode})")
        process = psutil.Process(relay.pid)
        if burst:
            connect_at_once(port, tokens[:count], burst, timeout_s, held)
            return
        times, failed = [], 0
        baseline = None
        start = time.monotonic()
        for i in range(count):
            if i == BASELINE:
                baseline = process.memory_info().rss
            began = time.monotonic()
            try:
                held.append(connect(port, tokens[i], timeout_s))
                times.append(time.monotonic() - began)
            except OSError as exc:
                failed += 1
                if failed == 1:
                    print(f"  first refusal at connection {i + 1}: {exc.__class__.__name__} {exc}")
                if failed >= 20:
                    break
        elapsed = time.monotonic() - start
        time.sleep(1)  # Let the relay's per-connection tasks settle before reading memory.
        rss = process.memory_info().rss
        per_socket = (rss - baseline) / max(1, len(held) - BASELINE) if baseline else 0
        times.sort()
        print(
            f"{mode:9} {count:5} asked, {len(held):5} held, {failed} refused or timed out; "
            f"connect median {1000 * statistics.median(times):.1f} ms, p99 "
            f"{1000 * times[int(0.99 * (len(times) - 1))]:.1f} ms, all in {elapsed:.1f} s; "
            f"RSS {rss / 2**20:.0f} MB ({baseline / 2**20:.0f} MB at {BASELINE}), "
            f"{per_socket / 1024:.0f} KB per connection, {process.num_threads()} threads"
        )
        for sock in held:
            sock.close()
        wait_until_idle(port)
        print(f"  after they left: RSS {process.memory_info().rss / 2**20:.0f} MB", end="")
        # A closed connection's ping task sleeps out its interval (25 s) before it ends;
        # then the relay gives memory back (web/relay_memory.py), within a check or two.
        for later in (30, 60):
            time.sleep(30)
            print(f", {process.memory_info().rss / 2**20:.0f} MB {later} s later", end="")
        print()
    finally:
        for sock in held:
            sock.close()
        relay.terminate()
        try:
            relay.wait(timeout=20)
        except subprocess.TimeoutExpired:
            relay.kill()
            relay.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="eventlet,threading")
    parser.add_argument("--sockets", default="500,2000")
    parser.add_argument(
        "--max-connections",
        type=int,
        default=None,
        help="SMARTROUTE_RELAY_MAX_CONNECTIONS for the eventlet relay",
    )
    parser.add_argument("--timeout-s", type=float, default=5.0)
    parser.add_argument(
        "--burst",
        type=int,
        default=0,
        help="connect this many at once (threads) instead of one after another",
    )
    args = parser.parse_args()
    counts = [int(n) for n in args.sockets.split(",")]
    if max(counts) > 10_000:
        raise SystemExit("at most 10000 connections")
    services = ensure_services(None, None, Path(".smartroute/bench"))
    try:
        tokens = drivers_with_tokens(services.database_url, max(counts))
        env = {
            **os.environ,
            "DATABASE_URL": services.database_url,
            "REDIS_URL": services.redis_url,
            "SMARTROUTE_SECRET_KEY": SECRET,
            "SMARTROUTE_LOG_LEVEL": "WARNING",
        }
        if args.max_connections:
            env["SMARTROUTE_RELAY_MAX_CONNECTIONS"] = str(args.max_connections)
        for mode in args.modes.split(","):
            for count in counts:
                measure(env, mode, count, tokens, args.timeout_s, args.burst)
    finally:
        services.stop()


if __name__ == "__main__":
    main()
