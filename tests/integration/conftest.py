"""A real engine for end-to-end tests: gunicorn serving the API and a Celery worker
with four prefork processes, on the test database and Redis."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable

import pytest
import requests

from dispatch.users import ensure_bootstrap_admin
from smartroute.cli import api_argv, beat_argv, worker_argv
from workers.app import create_celery

WORKER_PROCESSES = 4
START_TIMEOUT_S = 60
# Retries come round quickly, so a test that waits on beat waits about a second.
STACK_TUNING = {"SMARTROUTE_RETRY_INTERVAL_S": "1", "SMARTROUTE_REDISPATCH_EVERY_S": "0.5"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float, what: str, every: float = 0.1):
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``.

    Used only where no event exists to wait on (a row reaching a status in another
    process); each poll is a cheap query.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


class Stack:
    def __init__(self, settings, tmp_path_factory):
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.logs = tmp_path_factory.mktemp("stack-logs")
        self.env = {**os.environ, **settings.to_env(), **STACK_TUNING,
                    "SMARTROUTE_LOG_FORMAT": "json"}
        self.log_files = []
        self.api = self._spawn("api", api_argv("127.0.0.1", self.port, processes=2, threads=16))
        self.worker = self._spawn("worker", worker_argv(WORKER_PROCESSES, "dispatch,maintenance",
                                                        f"test-{self.port}@%h"))
        self.celery = create_celery(settings)

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.log_files.append(log)
        return subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def wait_ready(self) -> None:
        def api_up():
            for proc in (self.api, self.worker):
                if proc.poll() is not None:
                    raise AssertionError(f"a process exited early; see {self.logs}")
            try:
                return requests.get(f"{self.url}/health", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(api_up, START_TIMEOUT_S, "the API to answer /health", every=0.2)
        wait_for(lambda: self.celery.control.ping(timeout=0.5), START_TIMEOUT_S,
                 "the worker to answer a ping")

    def start_beat(self) -> subprocess.Popen:
        return self._spawn("beat", beat_argv(self.logs))

    def worker_children(self) -> list[int]:
        import psutil

        return [c.pid for c in psutil.Process(self.worker.pid).children()]

    def stop(self) -> None:
        for proc in (self.api, self.worker):
            if proc.poll() is None:
                proc.terminate()
        for proc in (self.api, self.worker):
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
def beat(stack):
    """Celery beat for one test, running the real schedule against the stack's worker."""
    process = stack.start_beat()
    yield process
    process.terminate()
    process.wait(timeout=20)


@pytest.fixture
def admin(stack, clean_db, committed_sessions) -> Client:
    with committed_sessions.begin() as s:
        ensure_bootstrap_admin(s, stack.settings.admin_token)
    return Client(stack.url, stack.settings.admin_token)


def new_user(admin: Client, role: str, name: str = "user") -> Client:
    created = admin.call("POST", "/v1/users", expect=201, json={"name": name, "role": role})
    client = Client(admin.base_url, created["token"])
    client.id = created["id"]
    return client


def online_driver(admin: Client, lat: float, lng: float, name: str = "driver") -> Client:
    driver = new_user(admin, "driver", name)
    driver.call("PUT", "/v1/drivers/me/location", json={"lat": lat, "lng": lng})
    driver.call("PUT", "/v1/drivers/me/status", json={"status": "available"})
    return driver
