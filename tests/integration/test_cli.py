"""The ``smartroute`` command as an operator runs it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import psutil
import requests

from tests.support import free_port, healthy, wait_for

SMARTROUTE = [sys.executable, "-m", "smartroute"]


def test_help_lists_every_part():
    out = subprocess.run([*SMARTROUTE, "--help"], capture_output=True, text=True, check=True)
    for command in ("up", "api", "worker", "beat", "relay", "db", "queues", "autoscale", "bench"):
        assert f"  {command} " in out.stdout


def test_a_bad_setting_is_a_usage_error_not_a_traceback():
    env = {**os.environ, "SMARTROUTE_OFFER_WINDOW_S": "soon"}
    out = subprocess.run([*SMARTROUTE, "db", "upgrade"], capture_output=True, text=True, env=env)
    assert out.returncode == 2
    assert "SMARTROUTE_OFFER_WINDOW_S" in out.stderr and "Traceback" not in out.stderr


def test_up_starts_everything_and_sigterm_stops_it_all(settings, tmp_path, clean_db):
    port = free_port()
    env = {
        **os.environ,
        **settings.to_env(),
        "SMARTROUTE_DATA_DIR": str(tmp_path),
        "SMARTROUTE_LOG_FORMAT": "json",
    }
    env.pop("SMARTROUTE_ADMIN_TOKEN")
    env.pop("SMARTROUTE_SECRET_KEY")
    env.pop("SMARTROUTE_METRICS_TOKEN")
    metrics_token = tmp_path / "metrics_token"
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115 - closed below
    up = subprocess.Popen(
        [*SMARTROUTE, "up", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def up_and_healthy():
            assert up.poll() is None, (tmp_path / "up.log").read_text()
            # The detailed /health takes the metrics token up generated and kept.
            return metrics_token.exists() and healthy(
                f"http://127.0.0.1:{port}", metrics_token.read_text().strip()
            )

        wait_for(up_and_healthy, 60, "smartroute up to be healthy", every=0.2)
        token = wait_for(
            lambda: (
                (tmp_path / "admin_token").exists()
                and (tmp_path / "admin_token").read_text().strip()
            ),
            10,
            "admin token",
        )
        # The generated admin token works, and the API, workers and beat all run.
        created = requests.post(
            f"http://127.0.0.1:{port}/v1/users",
            timeout=5,
            headers={"Authorization": f"Bearer {token}"},
            json={"name": "ops", "role": "rider"},
        )
        assert created.status_code == 201
        assert requests.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 401
        assert metrics_token.stat().st_mode & 0o777 == 0o600
        children = psutil.Process(up.pid).children(recursive=True)
        cmdlines = " ".join(" ".join(c.cmdline()) for c in children)
        assert "gunicorn" in cmdlines and " worker " in cmdlines and " beat " in cmdlines
        assert "smartroute.cli.relay" in cmdlines

        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=30) == 0
        # The signing key was generated and kept for every process, and never logged.
        secret_key = (tmp_path / "secret_key").read_text().strip()
        assert len(secret_key) >= 32 and secret_key not in (tmp_path / "up.log").read_text()
        assert not [c for c in children if c.is_running() and c.status() != "zombie"]
    finally:
        # On a failure, nothing it started may outlive the test and eat the next tests' tasks.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(up.pid, signal.SIGKILL)
        up.wait()
        log.close()
