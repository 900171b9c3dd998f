"""The engine under load: start one (``smartroute up``) or point at a running one, find its
processes, watch their memory and the broker's queues.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis
import requests

from smartroute.infra.settings import Settings

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0

# Every load client shares 127.0.0.1, so the per-address limits (600 bookings a minute) would
# cap any benchmark at 10 bookings a second. An engine the benchmark starts itself gets limits
# far above what it will offer; one started by hand needs the same (docs/performance.md).
BENCH_LIMITS = {
    "SMARTROUTE_BOOKING_LIMIT_PER_ADDRESS": "10000000/minute",
    "SMARTROUTE_BOOKING_LIMIT_PER_TOKEN": "10000000/minute",
    "SMARTROUTE_LOCATION_LIMIT_PER_ADDRESS": "10000000/minute",
    "SMARTROUTE_LOCATION_LIMIT_PER_TOKEN": "10000000/minute",
    "SMARTROUTE_QUOTE_LIMIT_PER_ADDRESS": "10000000/minute",
    "SMARTROUTE_QUOTE_LIMIT_PER_TOKEN": "10000000/minute",
    "SMARTROUTE_REQUEST_LIMIT_PER_ADDRESS": "10000000/minute",
    "SMARTROUTE_AUTH_FAILURE_LIMIT_PER_ADDRESS": "10000000/minute",
    "SMARTROUTE_REFRESH_LIMIT_PER_TOKEN": "10000000/minute",
    "SMARTROUTE_DRIVER_ACTION_LIMIT_PER_TOKEN": "10000000/minute",
    "SMARTROUTE_RELAY_ACTION_LIMIT_PER_TOKEN": "10000000/minute",
}


@dataclass
class Target:
    """Where the engine answers, and what the benchmark may look at directly."""

    api: str
    relay: str
    admin_token: str
    settings: Settings
    worker_concurrency: int
    root_pid: int | None = None
    log_path: Path | None = None

    @property
    def database_url(self) -> str | None:
        return self.settings.database_url

    @property
    def broker_url(self) -> str | None:
        try:
            return self.settings.celery_broker_url
        except ValueError:
            return None


def _free_port_pair() -> int:
    """A port P with P + 1 free too: ``smartroute up`` puts the relay on the API port + 1."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports on 127.0.0.1")


def _healthy(url: str, path: str = "/health") -> bool:
    try:
        return requests.get(f"{url}{path}", timeout=2).status_code == 200
    except requests.RequestException:
        return False


@contextlib.contextmanager
def started_engine(
    workers: int, data_dir: Path, extra_env: dict[str, str] | None = None
) -> Iterator[Target]:
    """Run ``smartroute up --workers N`` on free ports for the duration of the block.

    Embedded PostgreSQL and Redis (unless DATABASE_URL / REDIS_URL are set) are started
    here, not by ``up``, so the benchmark knows their URLs for its SQL checks and the
    Celery ceiling.
    """
    from smartroute.infra.embedded import ensure_services

    base = Settings.from_env()
    services = ensure_services(base.database_url, base.redis_url, data_dir)
    try:
        # A run must not inherit an earlier run's backlog (an overloaded run leaves hundreds
        # of pending bookings, which would be offered to this run's drivers). The embedded
        # services in the benchmark's own folder are emptied; services named by URL never are.
        if base.database_url is None:
            _empty_database(services.database_url)
        if base.redis_url is None:
            redis.Redis.from_url(services.redis_url).flushdb()
        settings = Settings.from_env(
            {
                **os.environ,
                **BENCH_LIMITS,
                **(extra_env or {}),
                "DATABASE_URL": services.database_url,
                "REDIS_URL": services.redis_url,
                "SMARTROUTE_DATA_DIR": str(data_dir),
            }
        )
        port = _free_port_pair()
        env = {
            **os.environ,
            **BENCH_LIMITS,
            **(extra_env or {}),
            **settings.to_env(),
            "SMARTROUTE_LOG_FORMAT": "json",
        }
        log_path = data_dir / "engine.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "smartroute",
                    "up",
                    "--port",
                    str(port),
                    "--workers",
                    str(workers),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            api, relay = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"
            deadline = time.monotonic() + START_TIMEOUT_S
            token_file = data_dir / "admin_token"
            while not (_healthy(api, "/health/live") and _healthy(relay) and token_file.exists()):
                if process.poll() is not None:
                    raise RuntimeError(
                        f"smartroute up exited with {process.returncode}; see {log_path}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the engine did not come up in {START_TIMEOUT_S:g}s; see {log_path}"
                    )
                # No readiness event to wait on: poll, bounded by the deadline.
                time.sleep(0.25)
            token = settings.admin_token or token_file.read_text().strip()
            yield Target(api, relay, token, settings, workers, process.pid, log_path)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
    finally:
        services.stop()


def _empty_database(database_url: str) -> None:
    """Drop every table of the benchmark's embedded database; ``up`` migrates it again."""
    from sqlalchemy import create_engine, pool, text

    from dispatch.db import sqlalchemy_url

    # Not make_engine: a database no run has migrated yet has no session limits to check.
    engine = create_engine(sqlalchemy_url(database_url), poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    finally:
        engine.dispose()


def running_engine(api: str, relay: str, admin_token: str | None, data_dir: Path) -> Target:
    """A Target for an engine started elsewhere; SQL and broker access only if URLs are known.

    DATABASE_URL / CELERY_BROKER_URL / REDIS_URL come from the environment; without them, the
    embedded Redis of ``data_dir`` is used when its socket answers.
    """
    from smartroute.infra.embedded import _redis_answers, redis_socket_path

    env = dict(os.environ)
    if not (env.get("REDIS_URL") or env.get("CELERY_BROKER_URL")):
        socket_path = redis_socket_path(data_dir)
        if _redis_answers(socket_path):
            env["REDIS_URL"] = f"unix://{socket_path}"
    settings = Settings.from_env(env)
    token = admin_token or settings.admin_token
    if token is None and (data_dir / "admin_token").exists():
        token = (data_dir / "admin_token").read_text().strip()
    if token is None:
        raise ValueError(
            "an admin token is needed: --token, SMARTROUTE_ADMIN_TOKEN, or "
            f"{data_dir / 'admin_token'}"
        )
    root = engine_root(api)
    concurrency = _worker_concurrency(engine_processes(root)) or 2
    return Target(api.rstrip("/"), relay.rstrip("/"), token, settings, concurrency, root)


def engine_root(api: str) -> int | None:
    """The process whose tree holds the engine serving ``api``: the ``smartroute up`` above
    the process listening on its port, or else that listener's parent (whatever started the
    parts one by one). Other engines on the machine, in their own trees, are left out."""
    from urllib.parse import urlsplit

    port = urlsplit(api).port
    try:
        listeners = [
            c.pid
            for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid
        ]
    except psutil.AccessDenied:
        return None
    if not listeners:
        return None
    try:
        process = psutil.Process(listeners[0])
        for ancestor in process.parents():
            if role_of(ancestor.cmdline()) == "supervisor":
                return ancestor.pid
        # gunicorn's master: its parent started the API and, presumably, the rest.
        master = next(
            (p for p in [process, *process.parents()] if role_of(p.cmdline()) != "api"), None
        )
        return master.pid if master is not None else None
    except psutil.Error:
        return None


# A role's needles must all appear: a dotted or punctuated needle anywhere in an argument,
# a plain word only as a whole argument (so "--duration" is not "up").
ROLES = (
    ("ceiling", ("smartroute_sim.noop",)),
    ("api", ("gunicorn", "web:create_app()")),
    ("relay", ("smartroute.cli.relay",)),
    ("beat", ("workers.main", "beat")),
    ("worker", ("workers.main", "worker")),
    ("supervisor", ("smartroute", "up")),
)


def role_of(cmdline: list[str]) -> str | None:
    def has(needle: str) -> bool:
        if needle.isalpha():
            return any(arg == needle or arg.endswith("/" + needle) for arg in cmdline)
        return any(needle in arg for arg in cmdline)

    for role, needles in ROLES:
        if all(has(n) for n in needles):
            return role
    return None


def engine_processes(root_pid: int | None) -> list[tuple[str, psutil.Process]]:
    """Every engine process with its role: the tree under ``root_pid``, or found by command
    line when the engine was started elsewhere. The no-op ceiling worker is left out."""
    if root_pid is not None:
        try:
            root = psutil.Process(root_pid)
            candidates = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
    else:
        candidates = list(psutil.process_iter())
    found = []
    for process in candidates:
        try:
            role = role_of(process.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if role is not None and role != "ceiling":
            found.append((role, process))
    return found


def _worker_concurrency(processes: list[tuple[str, psutil.Process]]) -> int | None:
    for role, process in processes:
        if role != "worker":
            continue
        with contextlib.suppress(psutil.Error, ValueError, IndexError):
            argv = process.cmdline()
            return int(argv[argv.index("--concurrency") + 1])
    return None


def peak_rss_bytes(process: psutil.Process) -> int:
    """The kernel's high-water mark of resident memory (VmHWM), else the current RSS."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return process.memory_info().rss


def service_processes(data_dir: Path | None) -> list[tuple[str, psutil.Process]]:
    """The embedded PostgreSQL (with its backends) and Redis living in ``data_dir``."""
    if data_dir is None:
        return []
    found = []
    for process in psutil.process_iter():
        try:
            cmdline = process.cmdline()
            if not cmdline or not any(str(data_dir) in arg for arg in cmdline):
                continue
            name = Path(cmdline[0].split()[0]).name  # redis-server rewrites its argv
            if name == "postgres":
                found += [("postgres", p) for p in [process, *process.children(recursive=True)]]
            elif name == "redis-server":
                found.append(("redis", process))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@dataclass
class EngineWatch:
    """Samples every engine process until stopped: each one's peak resident memory, and the
    CPU time each used meanwhile (with the embedded services', given their ``data_dir``)."""

    root_pid: int | None
    data_dir: Path | None = None
    every_s: float = 0.5
    peaks: dict[int, tuple[str, int]] = field(default_factory=dict)
    # CPU seconds by role when counting started; None until then.
    cpu_from: dict[str, float] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> EngineWatch:
        self._thread = threading.Thread(target=self._run, name="engine-watch", daemon=True)
        self._thread.start()
        return self

    def _find(self) -> tuple[list, list]:
        return engine_processes(self.root_pid), service_processes(self.data_dir)

    def _run(self) -> None:
        engine, services = [], []
        rounds = 0
        while True:
            if rounds % 10 == 0:  # gunicorn, Celery and PostgreSQL may start new processes.
                engine, services = self._find()
            rounds += 1
            self._measure(engine, services)
            if self._stop.wait(self.every_s):
                return

    def _measure(self, engine, services) -> None:
        for role, process in engine:
            try:
                rss = max(process.memory_info().rss, peak_rss_bytes(process))
            except psutil.Error:
                continue
            _, before = self.peaks.get(process.pid, (role, 0))
            self.peaks[process.pid] = (role, max(before, rss))

    def count_cpu_from_now(self) -> None:
        """Start the CPU count here."""
        self.cpu_from = cpu_by_role([p for group in self._find() for p in group])

    def stop(self) -> dict:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        engine, services = self._find()
        self._measure(engine, services)
        cpu_to = cpu_by_role([*engine, *services])
        return self.report(
            {role: used - self.cpu_from.get(role, 0.0) for role, used in cpu_to.items()}
            if self.cpu_from
            else {}
        )

    def report(self, cpu_used: dict[str, float]) -> dict:
        by_role: dict[str, float] = {}
        for role, rss in self.peaks.values():
            by_role[role] = max(by_role.get(role, 0.0), rss / 2**20)
        return {
            "max_rss_mb": round(max(by_role.values(), default=0.0), 1),
            "max_rss_mb_by_role": {k: round(v, 1) for k, v in sorted(by_role.items())},
            "processes": len(self.peaks),
            "cpu_s_by_role": {k: round(v, 2) for k, v in sorted(cpu_used.items())},
        }


def cpu_by_role(processes: list[tuple[str, psutil.Process]]) -> dict[str, float]:
    """CPU seconds used so far by each role: its live processes' own, and that of the
    children they have reaped. A process that came and went between two readings (a
    PostgreSQL backend for one connection, say) is in its parent's share at the second, so
    the difference of two readings counts it, where sampling live processes would not."""
    used: dict[str, float] = {}
    for role, process in processes:
        try:
            t = process.cpu_times()
        except psutil.Error:
            continue
        used[role] = used.get(role, 0.0) + t.user + t.system + t.children_user + t.children_system
    return used


def broker_client(broker_url: str | None) -> redis.Redis | None:
    """A redis-py client for the broker (kombu spells a unix socket ``redis+socket://``)."""
    if not broker_url or not broker_url.startswith(("redis", "unix")):
        return None
    if broker_url.startswith("redis+socket://"):
        broker_url = "unix://" + broker_url.removeprefix("redis+socket://")
    return redis.Redis.from_url(broker_url, socket_timeout=2)


def queue_depths(client: redis.Redis | None, queues: tuple[str, ...]) -> dict[str, int] | None:
    """Messages waiting in each Celery queue (kombu keeps each in a Redis list)."""
    if client is None:
        return None
    try:
        with client.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.llen(queue)
            return {q: int(n) for q, n in zip(queues, pipe.execute(), strict=True)}
    except (redis.RedisError, OSError):
        return None
