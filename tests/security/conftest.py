"""What the security tests share: the web tests' in-process app and client; a real gunicorn
for what only a real HTTP server shows (how a connection is handled after a 413); in-process
task runs on the test services; and a relay process of its own.

The relay runs as in production (``python -m smartroute.cli.relay``, eventlet) against the test
database; its Redis is the tests' own, or one a test may stop. Tokens come from the API in
this process, which shares that database and (unless a test says otherwise) that Redis.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from smartroute.cli.processes import api_argv, relay_argv
from smartroute.infra.celery_app import create_celery
from smartroute.infra.embedded import redis_socket_path, start_redis, stop_redis
from tests.support import free_port, healthy, wait_for
from tests.web.conftest import Api, api, app  # noqa: F401 - fixtures shared with tests/web
from web import create_app
from workers import context

# Small enough that a test's oversized body is a few KiB, at the floor settings allow.
SERVER_MAX_BODY_BYTES = 4096


@pytest.fixture
def app_with(settings):
    """An app built with some settings changed, disposed of after the test."""
    made = []

    def build(**changes):
        made.append(create_app(replace(settings, batch_window_s=0, **changes)))
        made[-1].config["TESTING"] = True
        return made[-1].test_client()

    yield build
    for built in made:
        built.extensions["smartroute"].engine.dispose()


@pytest.fixture(scope="module")
def api_server(settings, tmp_path_factory):
    """gunicorn serving the API alone, as ``smartroute api`` runs it (gthread, keep-alive
    from web/gunicorn_conf.py): the 413 tests need no worker or relay."""
    import requests

    port = free_port()
    env = {
        **os.environ,
        **settings.to_env(),
        "SMARTROUTE_MAX_BODY_BYTES": str(SERVER_MAX_BODY_BYTES),
        "SMARTROUTE_LOG_FORMAT": "json",
    }
    log_path = tmp_path_factory.mktemp("edge-server") / "api.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            api_argv("127.0.0.1", port, processes=1, threads=4),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def live():
        assert server.poll() is None, log_path.read_text()
        try:
            return requests.get(f"http://127.0.0.1:{port}/health/live", timeout=2).ok
        except requests.RequestException:
            return False

    try:
        wait_for(live, 60, "gunicorn to answer /health/live", every=0.2)
        yield port
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
def worker_context(settings, clean_db, monkeypatch):
    """workers.context (sessions, Redis) on the test services, in this process, and a Celery
    app on the test broker for whatever the tasks enqueue."""
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    caches = (context.settings, context.sessions, context.cache, context.publisher)
    for cached in caches:
        cached.cache_clear()
    create_celery(settings)  # The current app: the tasks' follow-up messages go to Redis.
    yield
    for cached in caches:
        cached.cache_clear()


START_TIMEOUT_S = 60


@dataclass
class Relay:
    url: str
    process: subprocess.Popen
    log: Path

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _start_relay(settings, log_dir: Path, redis_url: str) -> Relay:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        **settings.to_env(),
        "REDIS_URL": redis_url,
        # Python Socket.IO clients send the relay's own origin.
        "SMARTROUTE_RELAY_CORS_ORIGINS": url,
    }
    # The relay's own default revalidation period is what is under test.
    env.pop("SMARTROUTE_RELAY_REVALIDATE_EVERY_S", None)
    log = log_dir / f"relay-{port}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            relay_argv("127.0.0.1", port),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    relay = Relay(url, process, log)
    try:
        wait_for(
            lambda: process.poll() is None and healthy(url),
            START_TIMEOUT_S,
            "the relay to answer /health",
            every=0.2,
        )
    except AssertionError as exc:
        _stop(relay)
        raise AssertionError(f"{exc}\n{relay.log_tail()}") from None
    return relay


def _stop(relay: Relay) -> None:
    if relay.process.poll() is None:
        relay.process.terminate()
    try:
        relay.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        relay.process.kill()
        relay.process.wait()


@pytest.fixture(scope="module")
def relay(settings, tmp_path_factory) -> Iterator[Relay]:
    """A relay on the tests' Redis, for the tests of one module."""
    started = _start_relay(settings, tmp_path_factory.mktemp("relay"), settings.redis_url)
    yield started
    _stop(started)


@dataclass
class LonelyRelay:
    relay: Relay
    stop_redis: Callable[[], None]


@pytest.fixture
def relay_with_own_redis(settings, tmp_path_factory) -> Iterator[LonelyRelay]:
    """A relay on a Redis of its own, which the test may stop: what the relay does when it
    cannot reach Redis at all."""
    data_dir = tmp_path_factory.mktemp("own-redis")
    redis_url, _ = start_redis(data_dir)
    socket_path = redis_socket_path(data_dir)
    started = _start_relay(settings, data_dir, redis_url)
    yield LonelyRelay(started, lambda: stop_redis(socket_path))
    _stop(started)
    stop_redis(socket_path)
