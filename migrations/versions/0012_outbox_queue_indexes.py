"""The publisher's two queues get an index each, and the outbox's plain ``sent_at`` index
becomes a partial one.

Every outbox row is written three times: inserted, given a position, marked sent. Neither
update can be HOT (both columns are indexed), so each leaves a dead row version behind
until vacuum, and the old ``(id) WHERE sent_at IS NULL`` and ``(sent_at)`` indexes keep
pointing at them. The publisher's reads, "unsent without a position, by id" and "unsent
with one, by position", could use neither in order: PostgreSQL combined them in a bitmap
and visited every dead version on the heap, each time (0.6-0.7 ms per read after a few
thousand bookings, and growing until vacuum). An index per queue, holding only that
queue's rows in its order, answers each read with a short ordered scan that also marks
the dead entries it passes, so later scans skip them.

Rows already sent need ``sent_at`` only to be pruned, so only they are indexed on it.

Built and dropped CONCURRENTLY, as 0011 does, so publishing never waits on the migration.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 06:20:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# name -> (columns, predicate)
NEW = {
    "ix_outbox_events_unpositioned": (["id"], "sent_at IS NULL AND position IS NULL"),
    "ix_outbox_events_positioned_unsent": (
        ["position"],
        "sent_at IS NULL AND position IS NOT NULL",
    ),
    "ix_outbox_events_sent": (["sent_at"], "sent_at IS NOT NULL"),
}
OLD = {
    "ix_outbox_events_unsent": (["id"], "sent_at IS NULL"),
    "ix_outbox_events_sent_at": (["sent_at"], None),
}


def _swap(create: dict, drop: dict) -> None:
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
        for name in drop:
            op.drop_index(
                name, table_name="outbox_events", postgresql_concurrently=True, if_exists=True
            )
        op.execute("RESET statement_timeout")


def upgrade() -> None:
    _swap(NEW, OLD)


def downgrade() -> None:
    _swap(OLD, NEW)
