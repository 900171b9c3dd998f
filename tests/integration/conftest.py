"""A real engine for end-to-end tests: gunicorn serving the API and a Celery worker
with four prefork processes, on the test database and Redis."""

from __future__ import annotations

import datetime as dt
import os
import queue
import subprocess

import pytest
import redis
import requests
import socketio
from prometheus_client.parser import text_string_to_metric_families

from dispatch.users import ensure_bootstrap_admin
from smartroute.cli.processes import api_argv, beat_argv, relay_argv, worker_argv
from smartroute.infra.celery_app import create_celery
from tests.conftest import QUEUES
from tests.support import free_port, healthy, wait_for

WORKER_PROCESSES = 4
# What the tests present to read a /metrics endpoint (each asks for the metrics token).
# The same token the test settings carry (tests/conftest.py), so either spelling reaches /metrics.
METRICS_TOKEN = "test-metrics-token-for-health-and-metrics"
START_TIMEOUT_S = 60
# Retries come round quickly, so a test that waits on beat waits about a second.
# Scheduled bookings are due at their pickup time, so a test waits seconds, not minutes.
STACK_TUNING = {
    "SMARTROUTE_RETRY_INTERVAL_S": "1",
    "SMARTROUTE_REDISPATCH_EVERY_S": "0.5",
    "SMARTROUTE_SWEEP_OFFERS_EVERY_S": "0.5",
    "SMARTROUTE_OFFLINE_EVERY_S": "0.5",
    "SMARTROUTE_STATS_EVERY_S": "0.5",
    "SMARTROUTE_HEALTH_EVERY_S": "0.5",
    "SMARTROUTE_STUCK_EVERY_S": "0.5",
    "SMARTROUTE_SCHEDULE_LEAD_S": "0",
    # A driver at the pickup may report a no-show a second after arriving (the console's and
    # smartroute simulate's drivers), and a rider's cancel costs the tariff's fee as soon as
    # a driver is assigned.
    "SMARTROUTE_NO_SHOW_WAIT_S": "1",
    "SMARTROUTE_CANCEL_GRACE_S": "0",
    # Batched matching, with a short window.
    "SMARTROUTE_BATCH_WINDOW_S": "0.2",
    "SMARTROUTE_RELAY_REVALIDATE_EVERY_S": "0.5",
    # Every test client shares 127.0.0.1, and the fuzzer books hard with one token: the rate
    # limits have their own tests (tests/web/test_rate_limits.py).
    "SMARTROUTE_BOOKING_LIMIT_PER_ADDRESS": "100000/minute",
    "SMARTROUTE_BOOKING_LIMIT_PER_TOKEN": "100000/minute",
    "SMARTROUTE_QUOTE_LIMIT_PER_ADDRESS": "100000/minute",
    "SMARTROUTE_QUOTE_LIMIT_PER_TOKEN": "100000/minute",
    "SMARTROUTE_LOCATION_LIMIT_PER_TOKEN": "100000/minute",
    # The address gate and the per-token limits of the edge (tests/security/test_edge.py).
    "SMARTROUTE_REQUEST_LIMIT_PER_ADDRESS": "1000000/minute",
    "SMARTROUTE_AUTH_FAILURE_LIMIT_PER_ADDRESS": "100000/minute",
    "SMARTROUTE_REFRESH_LIMIT_PER_TOKEN": "100000/minute",
    "SMARTROUTE_DRIVER_ACTION_LIMIT_PER_TOKEN": "100000/minute",
    "SMARTROUTE_METRICS_TOKEN": METRICS_TOKEN,
}


class Stack:
    def __init__(
        self,
        settings,
        tmp_path_factory,
        tuning=STACK_TUNING,
        worker_processes=WORKER_PROCESSES,
        worker_name="test",
    ):
        self.settings = settings
        # Messages an earlier test's processes left behind (its beat's sweeps) must not run
        # against the next test's data.
        redis.Redis.from_url(settings.redis_url).delete(*QUEUES)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.relay_port = free_port()
        self.relay_url = f"http://127.0.0.1:{self.relay_port}"
        self.logs = tmp_path_factory.mktemp("stack-logs")
        self.metrics_dir = tmp_path_factory.mktemp("prometheus-multiproc")
        self.env = {
            **os.environ,
            **settings.to_env(),
            **tuning,
            "SMARTROUTE_LOG_FORMAT": "json",
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
            # The console's pages come from the API: the relay lets that origin in
            # (and its own, which python-socketio clients send), and the pages learn
            # where the relay is (not at API port + 1 here).
            "SMARTROUTE_RELAY_CORS_ORIGINS": f"{self.url},{self.relay_url}",
            "SMARTROUTE_RELAY_PUBLIC_URL": self.relay_url,
        }
        self.log_files = []
        self.api = self._spawn("api", api_argv("127.0.0.1", self.port, processes=2, threads=16))
        queues = ",".join((*settings.dispatch_queues, "notify", "maintenance"))
        self.worker = self._spawn(
            f"worker-{worker_name}",
            worker_argv(worker_processes, queues, f"{worker_name}-{self.port}@%h"),
        )
        self.relay = self.start_relay()
        self.celery = create_celery(settings)

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.log_files.append(log)
        return subprocess.Popen(
            argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_ready(self) -> None:
        def api_up():
            for proc in (self.api, self.worker, self.relay):
                if proc.poll() is not None:
                    raise AssertionError(f"a process exited early\n{self.log_tails()}")
            return healthy(self.url, self.settings.metrics_token)

        try:
            wait_for(api_up, START_TIMEOUT_S, "the API to answer /health", every=0.2)
            wait_for(
                lambda: self.celery.control.ping(timeout=0.5),
                START_TIMEOUT_S,
                "the worker to answer a ping",
            )
            wait_for(self.relay_up, START_TIMEOUT_S, "the relay to answer /health", every=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log_tails()}") from None

    def relay_up(self) -> bool:
        return healthy(self.relay_url)

    def log_tails(self, lines: int = 25) -> str:
        """The end of each process's log, for a failure message CI can show."""
        tails = []
        for path in sorted(self.logs.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            tails.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(tails)

    def start_relay(self) -> subprocess.Popen:
        return self._spawn("relay", relay_argv("127.0.0.1", self.relay_port))

    def start_beat(self, name: str = "beat") -> subprocess.Popen:
        schedule_dir = self.logs / name
        schedule_dir.mkdir(exist_ok=True)
        return self._spawn(name, beat_argv(schedule_dir))

    def worker_node(self) -> str:
        return next(iter(self.celery.control.ping(timeout=1)[0]))

    def worker_children(self) -> list[int]:
        import psutil

        return [c.pid for c in psutil.Process(self.worker.pid).children()]

    def stop(self) -> None:
        for proc in (self.api, self.worker, self.relay):
            if proc.poll() is None:
                proc.terminate()
        for proc in (self.api, self.worker, self.relay):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self.log_files:
            log.close()


@pytest.fixture(scope="package")
def stack(settings, tmp_path_factory):
    """Alive only while this package's tests run: other tests own the queues."""
    stack = Stack(settings, tmp_path_factory)
    try:
        stack.wait_ready()
        yield stack
    finally:
        stack.stop()


class Client:
    def __init__(self, base_url: str, token: str | None = None):
        self.base_url = base_url
        self.http = requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, expect: int | None = 200, **kwargs):
        response = self.http.request(method, f"{self.base_url}{path}", timeout=30, **kwargs)
        if expect is not None:
            assert response.status_code == expect, (method, path, response.text)
        return response.json()


@pytest.fixture
def beats(stack):
    """Start Celery beats (the real schedule, against the stack's worker) for one test."""
    started = []

    def start(name: str = "beat") -> subprocess.Popen:
        started.append(stack.start_beat(f"{name}-{len(started)}"))
        return started[-1]

    yield start
    for process in started:
        process.terminate()
    for process in started:
        process.wait(timeout=20)


@pytest.fixture
def beat(beats):
    return beats()


@pytest.fixture
def admin(stack, clean_db, committed_sessions) -> Client:
    with committed_sessions.begin() as s:
        admin_id = ensure_bootstrap_admin(s, stack.settings.admin_token)
    client = Client(stack.url, stack.settings.admin_token)
    client.id = admin_id
    return client


def new_user(admin: Client, role: str, name: str = "user") -> Client:
    created = admin.call("POST", "/v1/users", expect=201, json={"name": name, "role": role})
    client = Client(admin.base_url, created["token"])
    client.id, client.token = created["id"], created["token"]
    return client


def online_driver(admin: Client, lat: float, lng: float, name: str = "driver") -> Client:
    driver = new_user(admin, "driver", name)
    driver.call("PUT", "/v1/drivers/me/location", json={"lat": lat, "lng": lng})
    driver.call("PUT", "/v1/drivers/me/status", json={"status": "available"})
    return driver


# Socket.IO clients of the relay, for the push and relay-action tests.
WAIT_S = 20


class Listener:
    """A python-socketio client that queues every event it receives."""

    def __init__(self, url: str, token: str | None, last_event_id: int | None = None) -> None:
        self.events: queue.Queue = queue.Queue()
        self.client = socketio.Client(reconnection=False)
        for name in ("new_assignment", "booking_updated", "error"):
            self.client.on(name, lambda data, name=name: self.events.put((name, data)))
        self.client.on("disconnect", lambda *reason: self.events.put(("disconnect", reason)))
        auth = {} if token is None else {"token": token}
        if last_event_id is not None:
            auth["last_event_id"] = last_event_id
        self.client.connect(url, auth=auth, transports=["websocket"], wait_timeout=10)

    def next(self, name: str | None = None, timeout: float = WAIT_S) -> tuple[str, dict]:
        while True:
            event = self.events.get(timeout=timeout)
            if name is None or event[0] == name:
                return event

    def close(self) -> None:
        self.client.disconnect()


@pytest.fixture
def listeners(stack):
    opened = []

    def open_(token, last_event_id=None):
        opened.append(Listener(stack.relay_url, token, last_event_id))
        return opened[-1]

    yield open_
    for listener in opened:
        listener.close()


def disconnects(feed: Listener, timeout: float = 10) -> bool:
    gone = queue.Queue()
    feed.client.on("disconnect", lambda *_: gone.put(True))
    if not feed.client.connected:
        return True
    try:
        return gone.get(timeout=timeout)
    except queue.Empty:
        return not feed.client.connected


def relay_metric_families(stack) -> list:
    """The relay's /metrics, parsed into metric families (scraped with the metrics token)."""
    exposition = requests.get(
        f"{stack.relay_url}/metrics",
        timeout=10,
        headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
    ).text
    return list(text_string_to_metric_families(exposition))


# Rebalancing: a beat that suggests every second, and demand for it to see.
@pytest.fixture
def rebalancing_beat(stack, tmp_path):
    """A beat whose rebalancing runs every second (the shortest interval allowed)."""
    log = open(tmp_path / "beat.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        beat_argv(tmp_path),
        env={**stack.env, "SMARTROUTE_REBALANCE_EVERY_S": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    yield process
    process.terminate()
    process.wait(timeout=20)
    log.close()


def expected_demand(committed_sessions, now, bookings: int = 6) -> None:
    """Bookings at Lisbon's centre for an hour from now: demand the forecast sees, and none
    a driver is taken by meanwhile."""
    from tests import factories as make

    with committed_sessions.begin() as s:
        rider = make.rider(s, "rebalancing-rider")
        for _ in range(bookings):
            make.booking(s, rider, make.LISBON, now=now, pickup_at=now + dt.timedelta(hours=1))
