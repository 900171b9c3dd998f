"""A relay process of its own for the security tests, and the in-process API.

The relay runs as in production (``python -m smartroute.relay``, eventlet) against the test
database; its Redis is the tests' own, or one a test may stop. Tokens come from the API in
this process, which shares that database and (unless a test says otherwise) that Redis.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from smartroute.cli import relay_argv
from smartroute.embedded import redis_socket_path, start_redis, stop_redis
from tests.support import free_port, healthy, wait_for
from tests.web.conftest import api, app  # noqa: F401 - fixtures shared with tests/web.

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
    env = {**os.environ, **settings.to_env(), "REDIS_URL": redis_url,
           # Python Socket.IO clients send the relay's own origin.
           "SMARTROUTE_RELAY_CORS_ORIGINS": url}
    # The relay's own default revalidation period is what is under test.
    env.pop("SMARTROUTE_RELAY_REVALIDATE_EVERY_S", None)
    log = log_dir / f"relay-{port}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(relay_argv("127.0.0.1", port), env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    relay = Relay(url, process, log)
    try:
        wait_for(lambda: process.poll() is None and healthy(url), START_TIMEOUT_S,
                 "the relay to answer /health", every=0.2)
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
