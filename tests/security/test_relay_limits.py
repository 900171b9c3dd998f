"""The relay's limits, against a real relay process: a message over the size limit is refused
while it is being read (before it is buffered, token or no token), a connection runs one driver
action at a time, and a token has only so many actions a minute.

The size tests run once per async mode the relay ships (eventlet, threading)."""

from __future__ import annotations

import base64
import json
import os
import queue
import resource
import socket
import struct
import subprocess
import threading
from dataclasses import replace

import psutil
import pytest
import redis
import requests
import socketio
from sqlalchemy import text

from dispatch.db import make_engine, make_sessionmaker
from dispatch.models import User
from dispatch.tokens import hash_token, issue
from smartroute.cli.processes import relay_argv
from smartroute.infra.identity import Identity
from tests import factories as make
from tests.support import free_port, healthy, wait_for
from web.relay_actions import DriverActions

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

MODES = ["eventlet", "threading"]
START_TIMEOUT_S = 60
WAIT_S = 20
MESSAGE_BYTES = 32 * 1024 * 1024
# Each frame is under the relay's 64 KB limit: only their total is over it.
FRAME_BYTES = 32 * 1024
ALLOWED_GROWTH = 16 * 1024 * 1024


class Relay:
    """A relay process of its own, so each test picks its async mode and limits."""

    def __init__(self, settings, logs, mode: str = "eventlet", **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = logs / f"relay-{mode}-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            relay_argv("127.0.0.1", self.port),
            env={
                **os.environ,
                **settings.to_env(),
                "SMARTROUTE_RELAY_ASYNC_MODE": mode,
                "SMARTROUTE_RELAY_CORS_ORIGINS": self.url,
                **env,
            },
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for(self._up, START_TIMEOUT_S, f"the {mode} relay to answer /health", every=0.2)
        except AssertionError:
            self.stop()
            raise AssertionError(self.log_path.read_text(errors="replace")[-3000:]) from None

    def _up(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError("the relay exited early")
        return healthy(self.url)

    def rss(self) -> int:
        return psutil.Process(self.process.pid).memory_info().rss

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@pytest.fixture
def relays(settings, clean_db, tmp_path):
    started: list[Relay] = []

    def start(mode: str = "eventlet", **env: str) -> Relay:
        started.append(Relay(settings, tmp_path, mode, **env))
        return started[-1]

    yield start
    for relay in started:
        relay.stop()


# A raw WebSocket client: python-socketio's would never send a message this large in pieces.


class RawSocket:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            assert chunk, "the relay hung up during the handshake"
            head += chunk
        head, self.buffer = head.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        opened = self.receive()
        assert opened.startswith(b"0"), opened  # Engine.IO's OPEN packet.

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("closed by the relay")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def frame(self) -> tuple[int, bytes]:
        first, second = self._read(2)
        length = second & 127
        if length == 126:
            length = struct.unpack("!H", self._read(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._read(8))[0]
        return first & 15, self._read(length)

    def receive(self) -> bytes:
        """The next data message (a ping from the relay is answered on the way)."""
        while True:
            opcode, payload = self.frame()
            if opcode == 8:
                raise ConnectionResetError(f"close frame {payload[:2].hex()}")
            if opcode in (1, 2):
                return payload

    def send_frame(self, opcode: int, payload: bytes, final: bool) -> None:
        # A client must mask its frames; a zero mask leaves the payload as it is.
        header = bytes([(0x80 if final else 0) | opcode])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        elif len(payload) < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", len(payload))
        self.sock.sendall(header + b"\0\0\0\0" + payload)

    def send_fragmented(self, size: int, frame_bytes: int) -> int:
        """Send an Engine.IO message of ``size`` bytes in continuation frames; how many bytes
        went out before the relay hung up (``size`` if it never did)."""
        chunk = b"a" * frame_bytes
        sent = 0
        try:
            self.send_frame(1, b"4" + chunk[1:], final=False)
            sent = frame_bytes
            while sent + frame_bytes < size:
                self.send_frame(0, chunk, final=False)
                sent += frame_bytes
            self.send_frame(0, chunk[: size - sent], final=True)
            return size
        except TimeoutError:
            # Neither reading nor hanging up: the relay holds the connection open, unread.
            raise AssertionError(
                f"the relay stopped reading after {sent} bytes but kept the connection open"
            ) from None
        except OSError:
            return sent

    def closed(self) -> bool:
        """The relay ends the connection (a close frame, or the socket shut)."""
        try:
            while True:
                opcode, _ = self.frame()
                if opcode == 8:
                    return True
        except TimeoutError:
            return False
        except OSError:
            return True

    def close(self) -> None:
        self.sock.close()


class PeakRss:
    """The highest RSS a process reaches while the block runs, sampled every 10 ms."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def _warmed_up(relay: Relay, settings, token: str | None) -> RawSocket:
    """A raw connection (Socket.IO-connected with ``token``, if given), after one round of the
    same on another socket so that the relay's first-use allocations are behind us."""
    for warm_up in (True, False):
        raw = RawSocket(relay.port)
        if token is not None:
            raw.send_frame(1, b"40" + json.dumps({"token": token}).encode(), final=True)
            answer = raw.receive()
            assert answer.startswith(b"40{"), answer  # Socket.IO CONNECT, accepted.
        if warm_up:
            raw.close()
    return raw


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("authenticated", [False, True], ids=["no-token", "token"])
def test_a_huge_fragmented_message_is_refused_before_it_is_buffered(
    relays, settings, committed_sessions, now, mode, authenticated
):
    relay = relays(mode)
    token = None
    if authenticated:
        with committed_sessions.begin() as s:
            token = make.token(s, make.driver(s, now=now).user_id, settings.secret_key)
    raw = _warmed_up(relay, settings, token)
    before = relay.rss()
    threads = psutil.Process(relay.process.pid).num_threads()

    with PeakRss(relay.process.pid) as rss:
        sent = raw.send_fragmented(MESSAGE_BYTES, FRAME_BYTES)
        assert raw.closed()
    raw.close()

    assert rss.peak - before < ALLOWED_GROWTH, (before, rss.peak)
    assert sent < MESSAGE_BYTES, "the relay read the whole message before hanging up"
    # Nothing of the connection is left behind (the threading mode's threads included).
    wait_for(
        lambda: psutil.Process(relay.process.pid).num_threads() <= threads,
        WAIT_S,
        "the connection's threads to end",
    )
    assert healthy(relay.url)


@pytest.mark.parametrize("mode", MODES)
def test_a_long_polling_body_over_the_limit_or_of_unknown_size_is_refused(relays, mode):
    relay = relays(mode)
    polling = f"{relay.url}/socket.io/?EIO=4&transport=polling"
    opened = requests.get(polling, timeout=WAIT_S)
    assert opened.status_code == 200
    sid = json.loads(opened.text[1:])["sid"]
    session = f"{polling}&sid={sid}"

    too_big = requests.post(session, data=b"4" + b"a" * (64 * 1024), timeout=WAIT_S)
    chunked = requests.post(session, data=iter([b"4", b"hello"]), timeout=WAIT_S)

    assert (too_big.status_code, too_big.json()["error"]["code"]) == (413, "payload_too_large")
    assert chunked.status_code == 413
    # A body within the limit still goes through: the session is alive and answers.
    assert requests.post(session, data=b"40", timeout=WAIT_S).text == "OK"


@pytest.mark.parametrize("mode", MODES)
def test_a_full_relay_answers_503_and_still_its_health_check(relays, mode):
    relay = relays(mode, SMARTROUTE_RELAY_MAX_CONNECTIONS="3")
    held = [RawSocket(relay.port) for _ in range(3)]

    with pytest.raises(AssertionError, match="503"):
        RawSocket(relay.port)
    assert healthy(relay.url)

    # A closed connection makes room for the next.
    held.pop().close()
    held.append(wait_for(lambda: _connects(relay.port), WAIT_S, "room for a connection"))
    for raw in held:
        raw.close()


def _connects(port: int) -> RawSocket | None:
    try:
        return RawSocket(port)
    except AssertionError:
        return None


# Driver actions: one at a time per connection, and so many a minute per token.


def _driver_token(committed_sessions, settings, now, name: str = "driver") -> str:
    with committed_sessions.begin() as s:
        return make.token(s, make.driver(s, now=now, name=name).user_id, settings.secret_key)


@pytest.fixture
def clients():
    opened: list[socketio.Client] = []

    def connect(relay: Relay, token: str) -> socketio.Client:
        client = socketio.Client(reconnection=False)
        client.connect(relay.url, auth={"token": token}, transports=["websocket"], wait_timeout=10)
        opened.append(client)
        return client

    yield connect
    for client in opened:
        client.disconnect()


def _waits_on_a_lock(engine) -> bool:
    with engine.connect() as probe:
        return bool(
            probe.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                    "'smartroute-relay' "
                    "AND wait_event_type = 'Lock'"
                )
            )
        )


@pytest.mark.parametrize("mode", MODES)
def test_a_connection_runs_one_action_at_a_time(
    relays, clients, settings, committed_sessions, engine, now, mode
):
    relay = relays(mode)
    with committed_sessions.begin() as s:
        driver_id = make.driver(s, now=now).user_id
        token = make.token(s, driver_id, settings.secret_key)
        booking_id = make.booking(s, make.rider(s), now=now).id
        # Offered to this driver: only the owner's decline locks the row (and so waits).
        s.execute(
            text(
                "UPDATE cab_bookings SET status = 'assigned', driver_id = :d, "
                "offer_expires_at = now() + interval '5 minutes' WHERE id = :b"
            ),
            {"d": driver_id, "b": booking_id},
        )
    feed = clients(relay, token)
    answers: queue.Queue = queue.Queue()
    decline = {"booking_id": booking_id, "action": "decline"}

    with engine.connect() as lock:
        lock.execute(
            text("SELECT 1 FROM cab_bookings WHERE id = :id FOR UPDATE"), {"id": booking_id}
        )
        feed.emit("driver_action", decline, callback=answers.put)
        wait_for(lambda: _waits_on_a_lock(engine), WAIT_S, "the first action to wait on the lock")
        feed.emit("driver_action", decline, callback=answers.put)
        # Answered while the first still waits: the relay did not queue it behind the first.
        busy = answers.get(timeout=WAIT_S)
        assert (busy["status"], busy["error"]["code"]) == (429, "busy")
        assert answers.empty()
        lock.rollback()

    first = answers.get(timeout=WAIT_S)
    assert first["status"] == 200  # The decline went through once the row was free.
    # The connection is free again once its action has been answered.
    again = feed.call("driver_action", decline, timeout=WAIT_S)
    assert again["status"] == 409  # Declined already: no longer this driver's offer.


def test_a_token_has_so_many_actions_across_relays_and_others_are_still_served(
    relays, clients, settings, committed_sessions, now
):
    limit = {"SMARTROUTE_RELAY_ACTION_LIMIT_PER_TOKEN": "3/minute"}
    first_relay, second_relay = relays(**limit), relays(**limit)
    busy_token = _driver_token(committed_sessions, settings, now, "busy")
    other_token = _driver_token(committed_sessions, settings, now, "other")
    unknown = {"booking_id": 2**40, "action": "accept"}
    on_first, on_second = clients(first_relay, busy_token), clients(second_relay, busy_token)

    statuses = [
        client.call("driver_action", unknown, timeout=WAIT_S)["status"]
        for client in (on_first, on_second, on_first)
    ]
    refused = on_second.call("driver_action", unknown, timeout=WAIT_S)

    assert statuses == [404, 404, 404]
    assert (refused["status"], refused["error"]["code"]) == (429, "rate_limited")
    assert 1 <= refused["error"]["retry_after_s"] <= 60
    for relay in (first_relay, second_relay):
        served = clients(relay, other_token).call("driver_action", unknown, timeout=WAIT_S)
        assert served["status"] == 404


def test_without_redis_actions_are_not_limited(settings, committed_sessions, now):
    """As the API's limits: a limit that cannot be counted lets the action through."""
    # Nothing listens on port 9 of the loopback: every Redis call is refused at once.
    unreachable = replace(
        settings, redis_url="redis://127.0.0.1:9/0", relay_action_limit_per_token="1/minute"
    )
    engine = make_engine(settings.database_url, pool_size=1, max_overflow=0)
    actions = DriverActions(
        unreachable,
        make_sessionmaker(engine),
        None,
        redis.Redis.from_url(unreachable.redis_url, socket_timeout=1),
    )
    with committed_sessions.begin() as s:
        driver_id = make.driver(s, now=now).user_id
        token, row = issue(s, s.get(User, driver_id), settings.secret_key, 3600)
    holder = Identity(driver_id, "driver", row.id, hash_token(token), row.expires_at)
    try:
        answers = [
            actions.handle_on("sid", holder, {"booking_id": 2**40, "action": "accept"})
            for _ in range(3)
        ]
    finally:
        engine.dispose()
    assert [(a["status"], ended) for a, ended in answers] == [(404, False)] * 3


# Capacity: the relay's own cap is the only one, and bursts of connects queue for Redis.


def _driver_tokens(committed_sessions, settings, now, count: int) -> list[str]:
    with committed_sessions.begin() as s:
        return [
            make.token(
                s,
                make.driver(s, at=None, available=False, now=now, name=f"d{i}").user_id,
                settings.secret_key,
            )
            for i in range(count)
        ]


def _raise_open_files(needed: int) -> None:
    """Lets this process hold ``needed`` sockets (its soft limit may be 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


def _signed_in(port: int, token: str, last_event_id: int | None = None) -> RawSocket:
    """A WebSocket whose Socket.IO CONNECT the relay accepted; fails if the relay refused it
    or could not replay what followed ``last_event_id``."""
    raw = RawSocket(port)
    auth: dict = {"token": token}
    if last_event_id is not None:
        auth["last_event_id"] = last_event_id
    raw.send_frame(1, b"40" + json.dumps(auth).encode(), final=True)
    answer = raw.receive()
    while answer.startswith(b"42"):  # What the replay sends comes before the acceptance.
        assert b"replay_unavailable" not in answer, answer
        answer = raw.receive()
    assert answer.startswith(b"40{"), answer
    return raw


@pytest.mark.slow
def test_a_relay_holds_more_than_1024_connections_at_once(
    relays, committed_sessions, settings, now
):
    """eventlet's server holds 1024 connections unless told otherwise, and the 1025th
    waits unanswered; the relay tells it its own cap, so the default holds a city."""
    count = 1100
    _raise_open_files(count + 200)
    tokens = _driver_tokens(committed_sessions, settings, now, count)
    relay = relays()
    held = []
    try:
        for token in tokens:
            held.append(_signed_in(relay.port, token))
        assert len(held) == count
        assert healthy(relay.url)
    finally:
        for raw in held:
            raw.close()


@pytest.mark.slow
def test_a_burst_of_reconnecting_drivers_all_connect_and_replay(
    relays, committed_sessions, settings, now
):
    """300 drivers reconnecting at once, each asking for a replay from Redis, on a relay
    allowed 2 Redis connections: each waits its turn for one, none is refused or told the
    replay is unavailable."""
    count = 300
    _raise_open_files(count + 200)
    tokens = _driver_tokens(committed_sessions, settings, now, count)
    relay = relays(SMARTROUTE_RELAY_REDIS_CONNECTIONS="2")
    held: list[RawSocket] = []
    failures: list[str] = []
    start = threading.Barrier(count)

    def reconnect(token: str) -> None:
        start.wait()
        try:
            held.append(_signed_in(relay.port, token, last_event_id=0))
        except (AssertionError, OSError) as exc:
            failures.append(f"{exc.__class__.__name__}: {exc}")

    threads = [threading.Thread(target=reconnect, args=(t,)) for t in tokens]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=2 * START_TIMEOUT_S)
        assert not failures, (len(failures), failures[:5], relay.log_path.read_text()[-2000:])
        assert len(held) == count
    finally:
        for raw in held:
            raw.close()
