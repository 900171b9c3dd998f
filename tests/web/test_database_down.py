"""While PostgreSQL is down the API answers 503 with a clear error, quickly, and recovers."""

import time
from dataclasses import replace

import pytest

from dispatch.users import ensure_bootstrap_admin
from smartroute.infra import migrate
from smartroute.infra.embedded import start_postgres
from tests.support import wait_for
from web import create_app

GOOD = {"pickup": {"lat": 38.72, "lng": -9.14}, "dropoff": {"lat": 38.74, "lng": -9.15}}


@pytest.mark.chaos
def test_the_api_answers_503_while_postgres_is_down_and_recovers(settings, tmp_path):
    # A PostgreSQL of this test's own, so stopping it disturbs nobody else.
    url, server = start_postgres(tmp_path)
    migrate.upgrade(url)
    app = create_app(replace(settings, database_url=url, batch_window_s=0))
    runtime = app.extensions["smartroute"]
    with runtime.sessions.begin() as s:
        ensure_bootstrap_admin(s, settings.admin_token)
    client = app.test_client()
    auth = {"Authorization": f"Bearer {settings.admin_token}"}
    scraper = {"Authorization": f"Bearer {settings.metrics_token}"}
    try:
        assert client.get("/v1/bookings", headers=auth).status_code == 200

        server.cleanup()  # pg_ctl stop: the database goes away under a running API.
        started = time.monotonic()
        down = client.get("/v1/bookings", headers=auth)
        assert down.status_code == 503
        assert down.get_json()["error"]["code"] == "database_unavailable"
        assert down.headers["Retry-After"]
        assert time.monotonic() - started < 5, "the API hung instead of answering"
        # The dependency checks are cached for a moment: the next fresh look sees it.
        health = wait_for(
            lambda: (h := client.get("/health", headers=scraper)).status_code == 503 and h,
            10,
            "/health to notice the database is down",
        )
        assert "database" in health.get_json()["failing"]

        start_postgres(tmp_path)
        assert client.get("/v1/bookings", headers=auth).status_code == 200
    finally:
        runtime.engine.dispose()
