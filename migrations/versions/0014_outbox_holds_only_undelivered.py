"""The outbox holds only what is still to be sent: a delivered row is deleted, not marked.

Marking a row sent wrote a new version of it, with an entry in every index, for a row that
nothing read again but the hourly prune, which deleted it a day later. Deleting it on
delivery writes no new version and no index entry; the replay streams in Redis are what
reconnecting clients read, and they keep their own retention.

Delivered rows are deleted here, and ``sent_at`` goes with the indexes on it. The
unpositioned queue's index is rebuilt without ``sent_at`` in its predicate; rows with a
position are read through the unique index on it. The column's drop takes the table's
lock for a moment; a publisher of the previous release fails its run until it is
replaced, and the new release's publisher sends what it left.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 22:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNPOSITIONED = "ix_outbox_events_unpositioned"
# 0012's indexes: name -> (columns, predicate)
MARKED = {
    UNPOSITIONED: (["id"], "sent_at IS NULL AND position IS NULL"),
    "ix_outbox_events_positioned_unsent": (
        ["position"],
        "sent_at IS NULL AND position IS NOT NULL",
    ),
    "ix_outbox_events_sent": (["sent_at"], "sent_at IS NOT NULL"),
}


def _concurrently(create: dict) -> None:
    with op.get_context().autocommit_block():
        op.execute("SET statement_timeout = 0")
        for name, (columns, where) in create.items():
            op.create_index(
                name,
                "outbox_events",
                columns,
                postgresql_where=where,
                postgresql_concurrently=True,
                if_not_exists=True,
            )
        op.execute("RESET statement_timeout")


def upgrade() -> None:
    op.execute("SET LOCAL statement_timeout = 0")
    op.execute("DELETE FROM outbox_events WHERE sent_at IS NOT NULL")
    # Drops every index whose key or predicate names the column.
    op.drop_column("outbox_events", "sent_at")
    _concurrently({UNPOSITIONED: (["id"], "position IS NULL")})


def downgrade() -> None:
    op.drop_index(UNPOSITIONED, table_name="outbox_events")
    op.add_column("outbox_events", sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))
    _concurrently(MARKED)
