"""A live Celery worker node of its own, for the operators' tools."""

from __future__ import annotations

import os
import subprocess
from typing import NamedTuple

import pytest
from celery import Celery

from smartroute.cli.processes import worker_argv
from smartroute.infra.celery_app import create_celery
from tests.support import free_port, wait_for


class Node(NamedTuple):
    celery: Celery
    name: str
    env: dict[str, str]
    process: subprocess.Popen


@pytest.fixture
def worker(settings, tmp_path, clean_db):
    name = f"ops-{free_port()}@localhost"
    env = {**os.environ, **settings.to_env(), "SMARTROUTE_LOG_FORMAT": "json"}
    with open(tmp_path / "worker.log", "wb") as log:
        process = subprocess.Popen(
            worker_argv(1, "dispatch.default", name), env=env, stdout=log, stderr=subprocess.STDOUT
        )
        celery = create_celery(settings)
        try:
            wait_for(
                lambda: celery.control.ping(destination=[name], timeout=0.5),
                60,
                "the worker to answer",
            )
            yield Node(celery, name, env, process)
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=20)
