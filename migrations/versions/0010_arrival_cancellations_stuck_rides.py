"""Arrival, cancellations, no-shows and stuck rides: two statuses, the ride's times, who
cancelled and why, the fee's place, the overrun flag, and two more reasons a driver is never offered a booking again (their
cancel, a ride they never started), which also count drivers' cancellations.

Rides already accepted or under way get their acceptance and start times from their last
change, so the stuck-ride sweep can judge them; bookings already cancelled get their
canceller from the audit trail. The statuses' CHECKs are added NOT VALID and validated
after (no write waits on the scan), and the indexes are built CONCURRENTLY, as in 0007: the
one-active-booking-per-driver index is built anew beside the old one, which is dropped only
then, so the guarantee never lapses.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 19:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = (
    "pending",
    "assigned",
    "accepted",
    "in_progress",
    "completed",
    "cancelled",
    "expired",
    "arrived",
    "no_show",
)
OLD_STATUSES = STATUSES[:7]
ACTIVE = ("assigned", "accepted", "arrived", "in_progress")
OLD_ACTIVE = ("assigned", "accepted", "in_progress")
DECLINE_REASONS = ("declined", "timeout", "cancelled", "stuck")
OLD_DECLINE_REASONS = ("declined", "timeout")

NEW_COLUMNS = (
    ("accepted_at", sa.DateTime(timezone=True)),
    ("arrived_at", sa.DateTime(timezone=True)),
    ("started_at", sa.DateTime(timezone=True)),
    ("cancelled_by", sa.String(length=16)),
    ("cancel_reason", sa.Text()),
    ("cancellation_fee", sa.BigInteger()),
    ("overrun_at", sa.DateTime(timezone=True)),
)
NEW_CHECKS = (
    ("arrival_time", "status <> 'arrived' OR arrived_at IS NOT NULL"),
    ("cancelled_by_when_cancelled", "(status = 'cancelled') = (cancelled_by IS NOT NULL)"),
    ("canceller", "cancelled_by IN ('rider', 'admin', 'system')"),
    ("cancellation_fee_not_negative", "cancellation_fee >= 0"),
)
SWEEP_INDEXES = (
    (
        "ix_cab_bookings_unstarted_accepted_at",
        "accepted_at",
        "status IN ('accepted', 'arrived')",
    ),
    ("ix_cab_bookings_in_progress_started_at", "started_at", "status = 'in_progress'"),
)


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


def _replace_check(table: str, name: str, condition: str) -> None:
    op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
    op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} CHECK ({condition}) NOT VALID")
    op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}")


def _active_driver_index(active: tuple[str, ...]) -> None:
    """Build the one-active-booking-per-driver index for ``active`` beside the old one,
    then swap them (outside the migration's transaction)."""
    with op.get_context().autocommit_block():
        op.execute("SET statement_timeout = 0")
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS uq_cab_bookings_active_driver_next")
        op.execute(
            "CREATE UNIQUE INDEX CONCURRENTLY uq_cab_bookings_active_driver_next "
            f"ON cab_bookings (driver_id) WHERE {_in('status', active)}"
        )
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS uq_cab_bookings_active_driver")
        op.execute(
            "ALTER INDEX uq_cab_bookings_active_driver_next RENAME TO uq_cab_bookings_active_driver"
        )
        op.execute("RESET statement_timeout")


def upgrade() -> None:
    for name, column_type in NEW_COLUMNS:
        op.add_column("cab_bookings", sa.Column(name, column_type, nullable=True))
    # The rides under way at the upgrade: their last change was their acceptance (or start).
    op.execute("UPDATE cab_bookings SET accepted_at = updated_at WHERE status = 'accepted'")
    op.execute("UPDATE cab_bookings SET started_at = updated_at WHERE status = 'in_progress'")
    op.execute("""
        UPDATE cab_bookings b SET cancelled_by = coalesce((
            SELECT CASE u.role WHEN 'rider' THEN 'rider' WHEN 'admin' THEN 'admin' END
            FROM booking_events e LEFT JOIN users u ON u.id = e.actor_id
            WHERE e.booking_id = b.id AND e.to_status = 'cancelled'
            ORDER BY e.id DESC LIMIT 1
        ), 'system')
        WHERE b.status = 'cancelled'
    """)
    _replace_check("cab_bookings", "ck_cab_bookings_status", _in("status", STATUSES))
    for name, condition in NEW_CHECKS:
        op.execute(
            f"ALTER TABLE cab_bookings ADD CONSTRAINT ck_cab_bookings_{name} "
            f"CHECK ({condition}) NOT VALID"
        )
        op.execute(f"ALTER TABLE cab_bookings VALIDATE CONSTRAINT ck_cab_bookings_{name}")
    _replace_check("booking_declines", "ck_booking_declines_reason", _in("reason", DECLINE_REASONS))
    _active_driver_index(ACTIVE)
    with op.get_context().autocommit_block():
        op.execute("SET statement_timeout = 0")
        for name, column, where in SWEEP_INDEXES:
            op.create_index(
                name,
                "cab_bookings",
                [column],
                postgresql_concurrently=True,
                postgresql_where=sa.text(where),
                if_not_exists=True,
            )
        op.execute("RESET statement_timeout")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name, _column, _where in SWEEP_INDEXES:
            op.drop_index(
                name, table_name="cab_bookings", postgresql_concurrently=True, if_exists=True
            )
    # The new statuses fold into the nearest old ones: arrived was accepted, a no-show ends
    # as a cancellation; the new reasons a driver is not offered a booking, as a decline.
    op.execute("UPDATE cab_bookings SET status = 'accepted' WHERE status = 'arrived'")
    op.execute(
        "UPDATE cab_bookings SET status = 'cancelled', cancelled_by = 'system' "
        "WHERE status = 'no_show'"
    )
    op.execute(
        "UPDATE booking_declines SET reason = 'declined' WHERE reason IN ('cancelled', 'stuck')"
    )
    _active_driver_index(OLD_ACTIVE)
    _replace_check(
        "booking_declines", "ck_booking_declines_reason", _in("reason", OLD_DECLINE_REASONS)
    )
    for name, _condition in NEW_CHECKS:
        op.execute(f"ALTER TABLE cab_bookings DROP CONSTRAINT ck_cab_bookings_{name}")
    _replace_check("cab_bookings", "ck_cab_bookings_status", _in("status", OLD_STATUSES))
    for name, _column_type in reversed(NEW_COLUMNS):
        op.drop_column("cab_bookings", name)
