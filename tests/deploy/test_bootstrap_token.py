"""The operator's admin token works on every start path, and a new value replaces the old.

Real processes, as Compose or a Kubernetes migrate job runs them: ``smartroute db upgrade``
on a fresh database, then ``smartroute api`` alone (and a relay), never ``smartroute up``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid

import psycopg2
import pytest
import requests
import socketio
from sqlalchemy import make_url

from smartroute.infra.embedded import ensure_database
from tests.support import free_port, healthy, wait_for

SMARTROUTE = [sys.executable, "-m", "smartroute"]
pytestmark = pytest.mark.slow


def _token(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex}"  # 32 hex characters and a name: long enough.


def _one_short_of_head() -> str:
    """The revision before head: the schema the API can serve, without the token that only a
    head upgrade registers."""
    from alembic.script import ScriptDirectory

    from smartroute.infra.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config("postgresql://unused/unused"))
    return script.get_revision(script.get_current_head()).down_revision


@pytest.fixture
def fresh_env(settings, tmp_path):
    """The environment of an operator's processes, on a database nothing has touched."""
    url = make_url(settings.database_url)
    name = f"smartroute_bootstrap_{uuid.uuid4().hex[:12]}"
    server = url.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    ensure_database(server, name)
    env = {
        **os.environ,
        **settings.to_env(),
        "DATABASE_URL": url.set(database=name).render_as_string(hide_password=False),
        "SMARTROUTE_DATA_DIR": str(tmp_path),
        "SMARTROUTE_LOG_FORMAT": "json",
    }
    env.pop("SMARTROUTE_ADMIN_TOKEN", None)
    yield env
    conn = psycopg2.connect(server)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        conn.close()


@contextlib.contextmanager
def _running(*commands: tuple[list[str], dict, object, str]):
    """Long-running ``smartroute`` commands (argv, env, log path, URL), all started at once
    and healthy at their URLs; stopped with SIGTERM, which each must take as a clean exit."""
    logs, processes = [], []
    try:
        for argv, env, log_path, _url in commands:
            logs.append(open(log_path, "wb"))  # noqa: SIM115 - closed below
            processes.append(
                subprocess.Popen(
                    argv, env=env, stdout=logs[-1], stderr=subprocess.STDOUT, start_new_session=True
                )
            )
        for process, (argv, env, log_path, url) in zip(processes, commands, strict=True):
            # The API's /health answers the metrics token (the relay's, anyone).
            token = env.get("SMARTROUTE_METRICS_TOKEN")

            def up(process=process, log_path=log_path, url=url, token=token):
                assert process.poll() is None, log_path.read_text()
                return healthy(url, token)

            wait_for(up, 60, f"{argv[2]} to answer /health", every=0.2)
        yield processes
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process, (_argv, _env, log_path, _url) in zip(processes, commands, strict=True):
            assert process.wait(timeout=30) == 0, log_path.read_text()
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for log in logs:
            log.close()


def _api(env: dict, token: str, tmp_path, port: int) -> tuple[list[str], dict, object, str]:
    return (
        [*SMARTROUTE, "api", "--port", str(port), "--processes", "1", "--threads", "4"],
        {**env, "SMARTROUTE_ADMIN_TOKEN": token},
        tmp_path / f"api-{port}.log",
        f"http://127.0.0.1:{port}",
    )


def _admin_status(port: int, token: str) -> int:
    return requests.get(
        f"http://127.0.0.1:{port}/v1/admin/drivers",
        timeout=10,
        headers={"Authorization": f"Bearer {token}"},
    ).status_code


def _relay_accepts(relay_url: str, token: str) -> bool:
    client = socketio.Client(reconnection=False)
    try:
        client.connect(relay_url, auth={"token": token}, transports=["websocket"], wait_timeout=10)
    except socketio.exceptions.ConnectionError:
        return False
    client.disconnect()
    return True


def test_db_upgrade_then_api_alone_serves_the_token_and_a_new_value_replaces_it(
    fresh_env, tmp_path
):
    first, second = _token("first-admin"), _token("second-admin")
    migrated = subprocess.run(
        [*SMARTROUTE, "db", "upgrade"],
        capture_output=True,
        text=True,
        env={**fresh_env, "SMARTROUTE_ADMIN_TOKEN": first},
        timeout=120,
    )
    assert migrated.returncode == 0, migrated.stderr
    port = free_port()

    with _running(_api(fresh_env, first, tmp_path, port)):
        assert _admin_status(port, first) == 200
        # Twice: the second answer comes from the API's note in Redis that the database
        # accepted the token moments ago, which the rotation below must remove.
        assert _admin_status(port, first) == 200

    with _running(_api(fresh_env, second, tmp_path, port)):
        assert _admin_status(port, first) == 401
        assert _admin_status(port, second) == 200
        relay_port = free_port()
        relay_url = f"http://127.0.0.1:{relay_port}"
        relay_env = {
            **fresh_env,
            "SMARTROUTE_ADMIN_TOKEN": second,
            "SMARTROUTE_RELAY_CORS_ORIGINS": relay_url,
        }
        with _running(
            (
                [*SMARTROUTE, "relay", "--port", str(relay_port)],
                relay_env,
                tmp_path / "relay.log",
                relay_url,
            )
        ):
            assert not _relay_accepts(relay_url, first)
            assert _relay_accepts(relay_url, second)


def test_api_started_twice_at_once_registers_one_token(fresh_env, tmp_path):
    token = _token("replicas")
    env = {**fresh_env, "SMARTROUTE_ADMIN_TOKEN": token}
    subprocess.run(
        [*SMARTROUTE, "db", "upgrade", _one_short_of_head()],
        env=env,
        check=True,
        timeout=120,
        capture_output=True,
    )
    ports = free_port(), free_port()
    # Migrated short of head, which leaves the token to the two API starts, racing.
    with _running(*(_api(fresh_env, token, tmp_path, port) for port in ports)):
        assert [_admin_status(p, token) for p in ports] == [200, 200]
    conn = psycopg2.connect(
        make_url(env["DATABASE_URL"])
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM access_tokens)")
            assert cur.fetchone() == (1, 1)
    finally:
        conn.close()


@pytest.mark.parametrize("command", [["api"], ["db", "upgrade"], ["relay"]])
def test_a_short_admin_token_stops_start_up_and_names_the_variable(fresh_env, command):
    process = subprocess.Popen(
        [*SMARTROUTE, *command],
        env={**fresh_env, "SMARTROUTE_ADMIN_TOKEN": "12345"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode != 0
    assert "SMARTROUTE_ADMIN_TOKEN" in stderr and "Traceback" not in stderr
