"""A whole engine on PostgreSQL and Redis of its own, so faults hurt nothing else.

The chaos stack runs the API (gunicorn), two worker nodes, the relay and beat, like
`smartroute up` does, and can kill, stop, restart or wipe any of them, services included.
Timers are short (a 3 s offer window, sweeps every half second), so a fault that would
take minutes in production plays out in seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import replace

import psutil
import pytest
import redis
from sqlalchemy import event

from dispatch.db import make_engine, make_sessionmaker
from dispatch.users import ensure_bootstrap_admin
from smartroute.cli.processes import api_argv, relay_argv, worker_argv
from smartroute.infra import migrate
from smartroute.infra.embedded import redis_socket_path, start_postgres, start_redis
from smartroute.infra.settings import Settings
from tests.conftest import empty_redis, truncate_all
from tests.integration.conftest import STACK_TUNING, Client, Stack
from tests.support import healthy, wait_for

CHAOS_TUNING = {
    **STACK_TUNING,
    "SMARTROUTE_OFFER_WINDOW_S": "3",
    "SMARTROUTE_DISPATCH_DEADLINE_S": "180",
    # A stalled process's transaction is ended quickly (dispatch/db.py).
    "SMARTROUTE_DB_IDLE_IN_TRANSACTION_TIMEOUT_S": "2",
    # The stalled-worker fault finds the task waiting on its held driver row, then stops it:
    # that wait must outlast the finding.
    "SMARTROUTE_DB_LOCK_TIMEOUT_S": "20",
    "SMARTROUTE_RELAY_REVALIDATE_EVERY_S": "0.5",
    "SMARTROUTE_PUBLISH_EVERY_S": "0.5",
}
WORKER_NODES = ("alpha", "beta")


class ChaosStack(Stack):
    def __init__(self, settings, tmp_path_factory, data_dir):
        self.data_dir = data_dir
        database_url, self.postgres = start_postgres(data_dir)
        redis_url, _ = start_redis(data_dir)
        # The stack's session limits are the role's: its quick idle fence comes from here.
        migrate.upgrade(database_url, settings=Settings.from_env(CHAOS_TUNING))
        super().__init__(
            settings.with_services(database_url, redis_url),
            tmp_path_factory,
            tuning=CHAOS_TUNING,
            worker_processes=1,
            worker_name="alpha",
        )
        self.workers = {"alpha": self.worker, "beta": self.start_worker("beta")}
        self.beat = self.start_beat()

    # Processes ------------------------------------------------------------------------

    def start_worker(self, node: str) -> subprocess.Popen:
        return self._spawn(
            f"worker-{node}",
            worker_argv(
                1,
                ",".join((*self.settings.dispatch_queues, "notify", "maintenance")),
                f"{node}-{self.port}@%h",
            ),
        )

    def restart_worker(self, node: str) -> None:
        self.workers[node] = self.start_worker(node)

    def worker_pids(self, node: str) -> tuple[int, list[int]]:
        parent = self.workers[node]
        return parent.pid, [c.pid for c in psutil.Process(parent.pid).children()]

    def start_api(self, port: int, name: str) -> subprocess.Popen:
        """An API server (gunicorn, as the stack's own) on ``port``, logging to ``name``."""
        return self._spawn(name, api_argv("127.0.0.1", port, processes=2, threads=16))

    def start_relay_at(
        self, port: int, name: str, more_env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        """A relay on ``port``, letting in its own origin (what python-socketio sends)."""
        relay_url = f"http://127.0.0.1:{port}"
        origins = f"{self.url},{self.relay_url},{relay_url}"
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.log_files.append(log)
        return subprocess.Popen(
            relay_argv("127.0.0.1", port),
            env={**self.env, "SMARTROUTE_RELAY_CORS_ORIGINS": origins, **(more_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def restart_beat(self) -> None:
        self.beat = self.start_beat(f"beat-{len(self.log_files)}")

    # Services -------------------------------------------------------------------------

    def kill_redis(self) -> None:
        """SIGKILL: no shutdown, no save (it keeps nothing on disk anyway)."""
        pid = int((self.data_dir / "redis" / "redis.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not psutil.pid_exists(pid), 10, "Redis to die")
        redis_socket_path(self.data_dir).unlink(missing_ok=True)

    def start_redis(self) -> None:
        start_redis(self.data_dir)

    def stop_postgres(self) -> None:
        self.postgres.cleanup()  # pg_ctl stop: every connection is cut.

    def start_postgres(self) -> None:
        _, self.postgres = start_postgres(self.data_dir)

    def stop(self) -> None:
        for process in (self.beat, *self.workers.values()):
            if process.poll() is None:
                process.terminate()
        super().stop()
        for process in (self.beat, *self.workers.values()):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        redis.Redis.from_url(self.settings.redis_url).shutdown(nosave=True)
        self.postgres.cleanup()


@pytest.fixture(scope="package")
def chaos(settings, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("chaos-services")
    stack = ChaosStack(
        replace(settings, database_url=None, redis_url=None), tmp_path_factory, data_dir
    )
    try:
        stack.wait_ready()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="package")
def chaos_engine(chaos):
    engine = make_engine(chaos.settings.database_url, pool_size=2)

    @event.listens_for(engine, "connect")
    def _hold_as_long_as_the_test_needs(dbapi_connection, _record):
        # The tests' own blocker holds a row lock, idle in its transaction, while a fault
        # plays out: the fences that end the stack's stalled sessions must spare it.
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET idle_in_transaction_session_timeout = 0; SET lock_timeout = 0")
        dbapi_connection.commit()

    yield engine
    engine.dispose()


@pytest.fixture
def chaos_admin(chaos, chaos_engine) -> Client:
    """A clean slate for each fault: no bookings, users or drivers left from the last."""
    wait_for(
        lambda: chaos.relay_up() and healthy(chaos.url, chaos.settings.metrics_token),
        60,
        "the stack to be healthy",
    )
    truncate_all(chaos_engine)
    empty_redis(chaos.settings.redis_url)
    with make_sessionmaker(chaos_engine).begin() as session:
        ensure_bootstrap_admin(session, chaos.settings.admin_token)
    return Client(chaos.url, chaos.settings.admin_token)
