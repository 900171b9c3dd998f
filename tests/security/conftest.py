"""In-process task runs on the test services, for the security tests of tasks."""

from __future__ import annotations

import pytest

from workers import context
from workers.app import create_celery


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
