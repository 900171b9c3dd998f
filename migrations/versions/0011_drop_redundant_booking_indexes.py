"""Drop three indexes on cab_bookings that the history indexes of 0009 make redundant.

``(user_id)``, ``(driver_id)`` and ``(created_at)`` are each the leading column of
``(user_id, created_at, id)``, ``(driver_id, created_at, id)`` and ``(created_at, id)``,
which answer every query they did. A status change is not a HOT update (status is indexed),
so every index on the busiest table gets a new entry each time a booking moves: fewer
indexes is less work for every booking.

Dropped CONCURRENTLY, as 0007 and 0009 build theirs: a plain DROP INDEX would wait for, and
then hold off, every booking and every driver action.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 00:05:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REDUNDANT = (
    ("ix_cab_bookings_user_id", ["user_id"]),
    ("ix_cab_bookings_driver_id", ["driver_id"]),
    ("ix_cab_bookings_created_at", ["created_at"]),
)


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("SET statement_timeout = 0")
        for name, _columns in REDUNDANT:
            op.drop_index(
                name, table_name="cab_bookings", postgresql_concurrently=True, if_exists=True
            )
        op.execute("RESET statement_timeout")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("SET statement_timeout = 0")
        for name, columns in REDUNDANT:
            op.create_index(
                name, "cab_bookings", columns, postgresql_concurrently=True, if_not_exists=True
            )
        op.execute("RESET statement_timeout")
