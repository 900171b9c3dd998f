"""Migration 0014 on an outbox with pushes in it: what was delivered goes, what waits
(with or without its position) stays, and a downgrade gives the column back."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from dispatch.db import sqlalchemy_url
from smartroute.infra import migrate
from tests.support import database_at

BEFORE = "0013"


def test_delivered_pushes_go_and_waiting_ones_stay(settings):
    database = database_at(settings.database_url, "smartroute_outbox_migration_test", BEFORE)
    engine = create_engine(sqlalchemy_url(database))
    try:
        with engine.begin() as conn:
            rider = conn.scalar(
                text("INSERT INTO users (name, role) VALUES ('r', 'rider') RETURNING id")
            )
            booking = conn.scalar(
                text(
                    "INSERT INTO cab_bookings (user_id, pickup_lat, pickup_lng, dropoff_lat, "
                    "dropoff_lng, date, time, expires_at) VALUES (:rider, 38.7, -9.1, 38.8, "
                    "-9.2, current_date, localtime, now() + interval '5 minutes') RETURNING id"
                ),
                {"rider": rider},
            )
            for position, sent in [(1, True), (2, True), (3, False), (None, False)]:
                conn.execute(
                    text(
                        "INSERT INTO outbox_events (room, event, booking_id, payload, position,"
                        " sent_at) VALUES ('admin_dashboard', 'booking_updated', :booking, "
                        "'{}', :position, CASE WHEN :sent THEN now() END)"
                    ),
                    {"booking": booking, "position": position, "sent": sent},
                )
        migrate.upgrade(database, "head")
        with engine.connect() as conn:
            left = conn.execute(text("SELECT position FROM outbox_events ORDER BY id")).scalars()
            assert list(left) == [3, None]
            indexes = dict(
                conn.execute(
                    text(
                        "SELECT indexname, indexdef FROM pg_indexes "
                        "WHERE tablename = 'outbox_events'"
                    )
                ).all()
            )
            conn.rollback()
        # Nothing left that names the dropped column; the waiting queue keeps its index.
        assert not [d for d in indexes.values() if "sent_at" in d]
        assert indexes["ix_outbox_events_unpositioned"].endswith('WHERE ("position" IS NULL)')
        migrate.downgrade(database, BEFORE)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT position, sent_at FROM outbox_events ORDER BY id"))
            assert [tuple(r) for r in rows] == [(3, None), (None, None)]
    finally:
        engine.dispose()
        migrate.upgrade(database, "head")
