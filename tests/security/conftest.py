"""Security tests: the web tests' app and client, a real gunicorn for what only a real HTTP
server shows (how a connection is handled after a 413), and in-process task runs on the test
services for the security tests of tasks."""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace

import pytest

from smartroute.cli import api_argv
from tests.support import free_port, wait_for
from tests.web.conftest import Api, api, app  # noqa: F401 - fixtures shared with tests/web
from web import create_app
from workers import context
from workers.app import create_celery

# Small enough that a test's oversized body is a few KiB, at the floor settings allow.
SERVER_MAX_BODY_BYTES = 4096


@pytest.fixture
def app_with(settings):
    """An app built with some settings changed, disposed of after the test."""
    made = []

    def build(**changes):
        made.append(create_app(replace(settings, batch_window_s=0, **changes)))
        made[-1].config["TESTING"] = True
        return made[-1].test_client()

    yield build
    for built in made:
        built.extensions["smartroute"].engine.dispose()


@pytest.fixture(scope="module")
def api_server(settings, tmp_path_factory):
    """gunicorn serving the API alone, as ``smartroute api`` runs it (gthread, keep-alive
    from web/gunicorn_conf.py): the 413 tests need no worker or relay."""
    import requests

    port = free_port()
    env = {**os.environ, **settings.to_env(),
           "SMARTROUTE_MAX_BODY_BYTES": str(SERVER_MAX_BODY_BYTES),
           "SMARTROUTE_LOG_FORMAT": "json"}
    log_path = tmp_path_factory.mktemp("edge-server") / "api.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(api_argv("127.0.0.1", port, processes=1, threads=4), env=env,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def live():
        assert server.poll() is None, log_path.read_text()
        try:
            return requests.get(f"http://127.0.0.1:{port}/health/live", timeout=2).ok
        except requests.RequestException:
            return False

    try:
        wait_for(live, 60, "gunicorn to answer /health/live", every=0.2)
        yield port
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()



@pytest.fixture
def worker_context(settings, clean_db, monkeypatch):
    """workers.context (sessions, Redis) on the test services, in this process, and a Celery
    app on the test broker for whatever the tasks enqueue."""
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    caches = (context.settings, context.sessions, context.cache, context.publisher)
    for cached in caches:
        cached.cache_clear()
    create_celery(settings)  # The current app: the tasks' follow-up messages go to Redis.
    yield
    for cached in caches:
        cached.cache_clear()
