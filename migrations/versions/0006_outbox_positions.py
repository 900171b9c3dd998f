"""Outbox positions: events are ordered by publication, not by insert.

An id is taken at INSERT, and transactions commit in any order, so ids cannot be the order
clients replay in. The publisher gives each committed unsent row a position from its own
sequence. The sequence starts above every id handed out so far: event ids clients already
hold, and the ids already in the replay streams, stay below every new position.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 15:20:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE SEQUENCE outbox_event_positions")
    op.execute(
        "SELECT setval('outbox_event_positions', coalesce(pg_sequence_last_value("
        "pg_get_serial_sequence('outbox_events', 'id')::regclass), 0) + 1, false)"
    )
    op.add_column("outbox_events", sa.Column("position", sa.BigInteger(), nullable=True))
    # Owned by the column, so TRUNCATE ... RESTART IDENTITY starts positions afresh along
    # with ids (whoever does that empties the replay streams too, or the publisher stops
    # loudly on the first position Redis refuses).
    op.execute("ALTER SEQUENCE outbox_event_positions OWNED BY outbox_events.position")
    op.create_unique_constraint(op.f("uq_outbox_events_position"), "outbox_events", ["position"])


def downgrade() -> None:
    op.drop_constraint(op.f("uq_outbox_events_position"), "outbox_events", type_="unique")
    op.drop_column("outbox_events", "position")
    op.execute("DROP SEQUENCE IF EXISTS outbox_event_positions")  # Gone with the column.
