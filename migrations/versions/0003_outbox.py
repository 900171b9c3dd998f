"""The outbox: pushes written with the change they announce, delivered by a publisher.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 20:52:20.958094

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "outbox_events",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("room", sa.String(length=64), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("booking_id", sa.BigInteger(), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["booking_id"],
            ["cab_bookings.id"],
            name=op.f("fk_outbox_events_booking_id_cab_bookings"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_events")),
    )
    op.create_index("ix_outbox_events_booking_id", "outbox_events", ["booking_id"], unique=False)
    op.create_index("ix_outbox_events_sent_at", "outbox_events", ["sent_at"], unique=False)
    op.create_index(
        "ix_outbox_events_unsent",
        "outbox_events",
        ["id"],
        unique=False,
        postgresql_where=sa.text("sent_at IS NULL"),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index(
        "ix_outbox_events_unsent",
        table_name="outbox_events",
        postgresql_where=sa.text("sent_at IS NULL"),
    )
    op.drop_index("ix_outbox_events_sent_at", table_name="outbox_events")
    op.drop_index("ix_outbox_events_booking_id", table_name="outbox_events")
    op.drop_table("outbox_events")
