"""Migration 0010 on a database with rides in it: rides under way get the times the sweeps
need, cancelled bookings their canceller, and a downgrade folds the new statuses into the
old ones instead of failing on them."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from dispatch.db import sqlalchemy_url
from smartroute.infra import migrate
from tests.support import database_at

BEFORE = "0009"


def _booking(conn, rider: int, driver: int | None, status: str) -> int:
    return conn.scalar(
        text(
            "INSERT INTO cab_bookings (user_id, driver_id, pickup_lat, pickup_lng, dropoff_lat, "
            "dropoff_lng, date, time, status, expires_at, offer_expires_at, updated_at) "
            "VALUES (:rider, :driver, 38.7, -9.1, 38.8, -9.2, current_date, localtime, :status, "
            "now() + interval '5 minutes', "
            "CASE WHEN :status = 'assigned' THEN now() END, now() - interval '10 minutes') "
            "RETURNING id"
        ),
        {"rider": rider, "driver": driver, "status": status},
    )


def test_rides_under_way_survive_the_upgrade_and_the_downgrade(settings):
    database = database_at(settings.database_url, "smartroute_ride_states_migration_test", BEFORE)
    engine = create_engine(sqlalchemy_url(database))
    try:
        with engine.begin() as conn:
            rider = conn.scalar(
                text("INSERT INTO users (name, role) VALUES ('r', 'rider') RETURNING id")
            )
            admin = conn.scalar(
                text("INSERT INTO users (name, role) VALUES ('a', 'admin') RETURNING id")
            )
            drivers = [
                conn.scalar(
                    text("INSERT INTO users (name, role) VALUES ('d', 'driver') RETURNING id")
                )
                for _ in range(3)
            ]
            for driver in drivers:
                conn.execute(
                    text("INSERT INTO drivers (user_id, status) VALUES (:d, 'busy')"), {"d": driver}
                )
            accepted = _booking(conn, rider, drivers[0], "accepted")
            riding = _booking(conn, rider, drivers[1], "in_progress")
            by_admin = _booking(conn, rider, None, "cancelled")
            by_nobody = _booking(conn, rider, None, "cancelled")
            conn.execute(
                text(
                    "INSERT INTO booking_events (booking_id, from_status, to_status, actor_id, "
                    "version) VALUES (:b, 'pending', 'cancelled', :a, 2)"
                ),
                {"b": by_admin, "a": admin},
            )

        migrate.upgrade(database)
        with engine.begin() as conn:
            assert conn.scalar(
                text("SELECT accepted_at = updated_at FROM cab_bookings WHERE id = :b"),
                {"b": accepted},
            )
            assert conn.scalar(
                text("SELECT started_at = updated_at FROM cab_bookings WHERE id = :b"),
                {"b": riding},
            )
            cancellers = dict(
                conn.execute(
                    text("SELECT id, cancelled_by FROM cab_bookings WHERE status = 'cancelled'")
                ).all()
            )
            assert cancellers == {by_admin: "admin", by_nobody: "system"}
            # The new statuses, and the one-active-booking index that now counts arrived.
            conn.execute(
                text(
                    "UPDATE cab_bookings SET status = 'arrived', arrived_at = now() WHERE id = :b"
                ),
                {"b": accepted},
            )
            no_show = _booking(conn, rider, drivers[2], "accepted")
            conn.execute(
                text(
                    "UPDATE cab_bookings SET arrived_at = now(), status = 'no_show' WHERE id = :b"
                ),
                {"b": no_show},
            )
            assert conn.scalar(
                text(
                    "SELECT indexdef LIKE '%arrived%' FROM pg_indexes "
                    "WHERE indexname = 'uq_cab_bookings_active_driver'"
                )
            )

        migrate.downgrade(database, BEFORE)
        with engine.begin() as conn:
            statuses = dict(conn.execute(text("SELECT id, status FROM cab_bookings")).all())
            assert statuses[accepted] == "accepted"
            assert statuses[no_show] == "cancelled"
        migrate.upgrade(database)
    finally:
        engine.dispose()
