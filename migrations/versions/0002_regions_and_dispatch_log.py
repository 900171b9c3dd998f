"""Regions on bookings, and the dispatch log that explains each matching attempt.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 20:11:34.458544

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "dispatch_log",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("booking_id", sa.BigInteger(), nullable=False),
        sa.Column("batch_id", sa.String(length=36), nullable=False),
        sa.Column("matcher", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("driver_id", sa.BigInteger(), nullable=True),
        sa.Column("eta_s", sa.Double(), nullable=True),
        sa.Column("radius_km", sa.Double(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("candidates", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("excluded", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["booking_id"],
            ["cab_bookings.id"],
            name=op.f("fk_dispatch_log_booking_id_cab_bookings"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispatch_log")),
    )
    op.create_index("ix_dispatch_log_booking_id", "dispatch_log", ["booking_id"], unique=False)
    op.add_column(
        "cab_bookings",
        sa.Column("region", sa.String(length=32), server_default="default", nullable=False),
    )
    op.create_index(
        "ix_cab_bookings_pending_region",
        "cab_bookings",
        ["region", "created_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index(
        "ix_cab_bookings_pending_region",
        table_name="cab_bookings",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_column("cab_bookings", "region")
    op.drop_index("ix_dispatch_log_booking_id", table_name="dispatch_log")
    op.drop_table("dispatch_log")
