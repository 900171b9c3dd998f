"""docker-compose.yml is valid Compose, and runs every part of the engine."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = shutil.which("docker-compose")


@pytest.mark.skipif(COMPOSE is None, reason="docker-compose is not installed (.ci/run installs it)")
def test_compose_file_is_valid_and_complete():
    env = {**os.environ, "POSTGRES_PASSWORD": "pw", "SMARTROUTE_ADMIN_TOKEN": "t" * 32,
           "SMARTROUTE_SECRET_KEY": "k" * 32}
    compose = [COMPOSE, "-f", str(ROOT / "docker-compose.yml"), "config"]
    out = subprocess.run(compose, capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    listed = subprocess.run([*compose, "--services"], capture_output=True, text=True, env=env,
                            cwd=ROOT, check=True)
    assert {"postgres", "redis", "api", "worker", "beat", "relay"} <= set(listed.stdout.split())


@pytest.mark.skipif(COMPOSE is None, reason="docker-compose is not installed (.ci/run installs it)")
def test_compose_refuses_to_run_without_secrets():
    env = {k: v for k, v in os.environ.items()
           if k not in ("POSTGRES_PASSWORD", "SMARTROUTE_ADMIN_TOKEN", "SMARTROUTE_SECRET_KEY")}
    out = subprocess.run([COMPOSE, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode != 0 and "POSTGRES_PASSWORD" in out.stderr
