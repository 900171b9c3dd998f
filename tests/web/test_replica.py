"""With DATABASE_REPLICA_URL set, listings and stats read the replica; writes stay on primary."""

from dataclasses import replace

import pytest
from sqlalchemy import create_engine, make_url, text

from dispatch.db import sqlalchemy_url
from dispatch.users import ensure_bootstrap_admin
from smartroute.infra import migrate
from smartroute.infra.embedded import ensure_database
from web import create_app
from web.runtime import Runtime


@pytest.fixture(scope="module")
def replica_url(settings):
    # A second database stands in for the replica: what it holds differs from the primary,
    # so an answer shows which one was read.
    url = make_url(settings.database_url)
    ensure_database(
        url.set(database="postgres").render_as_string(hide_password=False),
        "smartroute_replica_test",
    )
    replica = url.set(database="smartroute_replica_test").render_as_string(hide_password=False)
    migrate.upgrade(replica)
    engine = create_engine(sqlalchemy_url(replica))
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE users, cab_bookings RESTART IDENTITY CASCADE"))
        conn.execute(
            text("INSERT INTO users (id, name, role) VALUES (900, 'replica-rider', 'rider')")
        )
        conn.execute(
            text(
                "INSERT INTO cab_bookings (id, user_id, pickup_lat, pickup_lng, dropoff_lat, "
                "dropoff_lng, date, time, status, expires_at) VALUES (4242, 900, 1, 1, 2, 2, "
                "current_date, current_time, 'pending', now() + interval '1 hour')"
            )
        )
    engine.dispose()
    return replica


def test_listings_and_stats_read_the_replica(settings, replica_url, clean_db, committed_sessions):
    with committed_sessions.begin() as s:
        ensure_bootstrap_admin(s, settings.admin_token)
    app = create_app(replace(settings, database_replica_url=replica_url))
    runtime: Runtime = app.extensions["smartroute"]
    client = app.test_client()
    auth = {"Authorization": f"Bearer {settings.admin_token}"}
    try:
        listed = client.get("/v1/bookings", headers=auth).get_json()["bookings"]
        assert [b["id"] for b in listed] == [4242]
        runtime.redis.delete("smartroute:snapshot:booking-stats")
        stats = client.get("/v1/stats", headers=auth).get_json()
        assert stats["source"] == "database" and stats["by_status"]["pending"] == 1
        # A single booking is read from the primary (a rider must see what they just wrote).
        assert client.get("/v1/bookings/4242", headers=auth).status_code == 404
    finally:
        runtime.engine.dispose()
        runtime.read_sessions.kw["bind"].dispose()
