"""docker-compose.yml is valid Compose, scales, and its proxy and pool settings add up."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy import compose

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = shutil.which("docker-compose")
HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
SECRETS = {
    "POSTGRES_PASSWORD": "pw",
    "REDIS_PASSWORD": "rpw",
    "SMARTROUTE_ADMIN_TOKEN": "t" * 32,
    "SMARTROUTE_SECRET_KEY": "k" * 32,
    "SMARTROUTE_METRICS_TOKEN": "m" * 32,
    "GRAFANA_ADMIN_PASSWORD": "gpw",
}
SMARTROUTE = ("migrate", "api", "worker", "relay", "beat")
SCALED = ("api", "worker", "relay")


def _without(*names: str) -> dict[str, str]:
    return {k: v for k, v in {**os.environ, **SECRETS}.items() if k not in names}


@pytest.fixture(scope="module")
def services() -> dict[str, dict]:
    return compose.load(SECRETS)["services"]


@pytest.mark.skipif(COMPOSE is None, reason="docker-compose is not installed (.ci/run installs it)")
def test_compose_file_is_valid_and_complete():
    command = [COMPOSE, "-f", str(ROOT / "docker-compose.yml"), "config"]
    out = subprocess.run(command, capture_output=True, text=True, env=_without(), cwd=ROOT)
    assert out.returncode == 0, out.stderr
    listed = subprocess.run(
        [*command, "--services"],
        capture_output=True,
        text=True,
        env=_without(),
        cwd=ROOT,
        check=True,
    )
    assert {
        "postgres",
        "pgbouncer",
        "redis",
        "migrate",
        "api",
        "worker",
        "beat",
        "relay",
        "proxy",
        "prometheus",
        "grafana",
    } <= set(listed.stdout.split())


@pytest.mark.skipif(COMPOSE is None, reason="docker-compose is not installed (.ci/run installs it)")
@pytest.mark.parametrize("secret", sorted(SECRETS))
def test_compose_refuses_to_run_without_each_secret(secret):
    out = subprocess.run(
        [COMPOSE, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        env=_without(secret),
        cwd=ROOT,
    )
    assert out.returncode != 0 and secret in out.stderr


def test_only_the_proxy_and_the_dashboard_publish_ports_so_every_service_scales(services):
    published = {name for name, s in services.items() if s.get("ports")}
    assert published == {"proxy", "grafana"}
    # Fixed names cannot be scaled either.
    assert not [name for name, s in services.items() if "container_name" in s]
    for name in SCALED:
        assert "deploy" not in services[name] or "replicas" not in services[name]["deploy"]


def test_every_long_running_service_has_a_health_check(services):
    missing = [
        name
        for name, s in services.items()
        if name != "migrate" and compose.healthcheck_argv(s) is None
    ]
    assert missing == []


def test_smartroute_reaches_postgres_through_pgbouncer_and_redis_with_its_password(services):
    for name in SMARTROUTE:
        env = services[name]["environment"]
        expected_db = "@postgres:5432/" if name == "migrate" else "@pgbouncer:6432/"
        assert expected_db in env["DATABASE_URL"], (name, env["DATABASE_URL"])
        assert env["REDIS_URL"].startswith(f"redis://:{SECRETS['REDIS_PASSWORD']}@redis:"), name
    redis_argv = services["redis"]["command"]
    assert redis_argv[redis_argv.index("--requirepass") + 1] == SECRETS["REDIS_PASSWORD"]
    assert redis_argv[redis_argv.index("--maxmemory-policy") + 1] == "noeviction"
    assert "--maxmemory" in redis_argv


def test_the_relay_and_the_pages_share_the_proxys_origin(services):
    for name in ("api", "relay"):
        env = services[name]["environment"]
        assert env["SMARTROUTE_RELAY_PUBLIC_URL"] == env["SMARTROUTE_RELAY_CORS_ORIGINS"]
        assert "*" not in env["SMARTROUTE_RELAY_CORS_ORIGINS"]
    proxy_port = services["proxy"]["ports"][0].split(":")[-2]
    assert services["api"]["environment"]["SMARTROUTE_RELAY_PUBLIC_URL"].endswith(f":{proxy_port}")


def _pgbouncer_settings(text: str) -> dict[str, str]:
    parser = configparser.ConfigParser(inline_comment_prefixes=None, interpolation=None)
    parser.read_string(text)
    return dict(parser["pgbouncer"])


def test_the_connection_arithmetic_adds_up(services):
    """PgBouncer never opens more server connections than PostgreSQL accepts, leaving room
    for migrations and an operator; its clients can be every pooled process at full size."""
    bouncer = _pgbouncer_settings((ROOT / "deploy" / "pgbouncer" / "pgbouncer.ini").read_text())
    assert bouncer["pool_mode"] == "transaction"
    postgres_argv = services["postgres"]["command"]
    max_connections = int(
        next(a.split("=", 1)[1] for a in postgres_argv if a.startswith("max_connections="))
    )
    server_side = int(bouncer["max_db_connections"])
    assert int(bouncer["default_pool_size"]) + int(bouncer["reserve_pool_size"]) <= server_side
    # 3 superuser_reserved_connections, 1 for migrate, 10 for an operator and monitoring.
    assert server_side + 3 + 1 + 10 <= max_connections
    # Clients: the example in docker-compose.yml's comment, 32 processes of up to 20 each.
    comment = (ROOT / "docker-compose.yml").read_text()
    processes = int(re.search(r"relay 2 x 1 = 2: (\d+) processes", comment).group(1))
    assert processes * (5 + 15) <= int(bouncer["max_client_conn"])


def test_the_kubernetes_pgbouncer_config_is_the_compose_one():
    import yaml

    docs = yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "pgbouncer.yaml").read_text())
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    assert _pgbouncer_settings(configmap["data"]["pgbouncer.ini"]) == _pgbouncer_settings(
        (ROOT / "deploy" / "pgbouncer" / "pgbouncer.ini").read_text()
    )


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (.ci/run installs it)")
def test_the_proxy_config_passes_haproxys_own_check():
    out = subprocess.run(
        [HAPROXY, "-c", "-f", str(ROOT / "deploy" / "haproxy" / "haproxy.cfg")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerignore_keeps_secrets_and_non_runtime_files_out_of_the_image():
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {
        ".env",
        "*.env",
        ".git",
        ".venv",
        ".smartroute",
        "tests",
        "benchmarks",
        "docs",
        "node_modules",
        "secrets",
    } <= ignored
