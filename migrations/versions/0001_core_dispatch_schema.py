"""Core dispatch schema: users, drivers, bookings, declines, audit events, idempotency keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-28 19:37:30.467466

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "users",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("role IN ('rider', 'driver', 'admin')", name=op.f("ck_users_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_users_token_hash")),
    )
    op.create_index("ix_users_role", "users", ["role"], unique=False)
    op.create_table(
        "drivers",
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="offline", nullable=False),
        sa.Column("lat", sa.Double(), nullable=True),
        sa.Column("lng", sa.Double(), nullable=True),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("available_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('offline', 'available', 'busy')", name=op.f("ck_drivers_status")
        ),
        sa.CheckConstraint(
            "(lat IS NULL) = (lng IS NULL)", name=op.f("ck_drivers_location_complete")
        ),
        sa.CheckConstraint(
            "lat IS NULL OR lat BETWEEN -90 AND 90", name=op.f("ck_drivers_lat_range")
        ),
        sa.CheckConstraint(
            "lng IS NULL OR lng BETWEEN -180 AND 180", name=op.f("ck_drivers_lng_range")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_drivers_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_drivers")),
    )
    op.create_index("ix_drivers_status_lat", "drivers", ["status", "lat"], unique=False)
    op.create_table(
        "cab_bookings",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("driver_id", sa.BigInteger(), nullable=True),
        sa.Column("pickup_lat", sa.Double(), nullable=False),
        sa.Column("pickup_lng", sa.Double(), nullable=False),
        sa.Column("dropoff_lat", sa.Double(), nullable=False),
        sa.Column("dropoff_lng", sa.Double(), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("time", sa.Time(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("offer_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("match_attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "(status = 'assigned') = (offer_expires_at IS NOT NULL)",
            name=op.f("ck_cab_bookings_offer_timer"),
        ),
        sa.CheckConstraint(
            "driver_id IS NOT NULL OR status IN ('pending', 'cancelled', 'expired')",
            name=op.f("ck_cab_bookings_driver_when_matched"),
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'assigned', 'accepted', 'in_progress', 'completed', 'cancelled', 'expired')",
            name=op.f("ck_cab_bookings_status"),
        ),
        sa.CheckConstraint(
            "dropoff_lat BETWEEN -90 AND 90", name=op.f("ck_cab_bookings_dropoff_lat_range")
        ),
        sa.CheckConstraint(
            "dropoff_lng BETWEEN -180 AND 180", name=op.f("ck_cab_bookings_dropoff_lng_range")
        ),
        sa.CheckConstraint(
            "pickup_lat BETWEEN -90 AND 90", name=op.f("ck_cab_bookings_pickup_lat_range")
        ),
        sa.CheckConstraint(
            "pickup_lng BETWEEN -180 AND 180", name=op.f("ck_cab_bookings_pickup_lng_range")
        ),
        sa.CheckConstraint("version >= 1", name=op.f("ck_cab_bookings_version_positive")),
        sa.ForeignKeyConstraint(
            ["driver_id"], ["drivers.user_id"], name=op.f("fk_cab_bookings_driver_id_drivers")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_cab_bookings_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cab_bookings")),
    )
    op.create_index(
        "ix_cab_bookings_assigned_offer_expiry",
        "cab_bookings",
        ["offer_expires_at"],
        unique=False,
        postgresql_where=sa.text("status = 'assigned'"),
    )
    op.create_index("ix_cab_bookings_created_at", "cab_bookings", ["created_at"], unique=False)
    op.create_index("ix_cab_bookings_date_time", "cab_bookings", ["date", "time"], unique=False)
    op.create_index("ix_cab_bookings_driver_id", "cab_bookings", ["driver_id"], unique=False)
    op.create_index(
        "ix_cab_bookings_pending_next_attempt",
        "cab_bookings",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_cab_bookings_status_created_at", "cab_bookings", ["status", "created_at"], unique=False
    )
    op.create_index("ix_cab_bookings_status_date", "cab_bookings", ["status", "date"], unique=False)
    op.create_index("ix_cab_bookings_user_id", "cab_bookings", ["user_id"], unique=False)
    op.create_index(
        "uq_cab_bookings_active_driver",
        "cab_bookings",
        ["driver_id"],
        unique=True,
        postgresql_where=sa.text("status IN ('assigned', 'accepted', 'in_progress')"),
    )
    op.create_table(
        "booking_declines",
        sa.Column("booking_id", sa.BigInteger(), nullable=False),
        sa.Column("driver_id", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "reason IN ('declined', 'timeout')", name=op.f("ck_booking_declines_reason")
        ),
        sa.ForeignKeyConstraint(
            ["booking_id"],
            ["cab_bookings.id"],
            name=op.f("fk_booking_declines_booking_id_cab_bookings"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["driver_id"],
            ["drivers.user_id"],
            name=op.f("fk_booking_declines_driver_id_drivers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("booking_id", "driver_id", name=op.f("pk_booking_declines")),
    )
    op.create_table(
        "booking_events",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("booking_id", sa.BigInteger(), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("driver_id", sa.BigInteger(), nullable=True),
        sa.Column("actor_id", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["booking_id"],
            ["cab_bookings.id"],
            name=op.f("fk_booking_events_booking_id_cab_bookings"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_booking_events")),
        sa.UniqueConstraint("booking_id", "version", name="uq_booking_events_booking_version"),
    )
    op.create_index("ix_booking_events_booking_id", "booking_events", ["booking_id"], unique=False)
    op.create_table(
        "idempotency_keys",
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("booking_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["booking_id"],
            ["cab_bookings.id"],
            name=op.f("fk_idempotency_keys_booking_id_cab_bookings"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_idempotency_keys_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "key", name=op.f("pk_idempotency_keys")),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("idempotency_keys")
    op.drop_index("ix_booking_events_booking_id", table_name="booking_events")
    op.drop_table("booking_events")
    op.drop_table("booking_declines")
    op.drop_index(
        "uq_cab_bookings_active_driver",
        table_name="cab_bookings",
        postgresql_where=sa.text("status IN ('assigned', 'accepted', 'in_progress')"),
    )
    op.drop_index("ix_cab_bookings_user_id", table_name="cab_bookings")
    op.drop_index("ix_cab_bookings_status_date", table_name="cab_bookings")
    op.drop_index("ix_cab_bookings_status_created_at", table_name="cab_bookings")
    op.drop_index(
        "ix_cab_bookings_pending_next_attempt",
        table_name="cab_bookings",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_index("ix_cab_bookings_driver_id", table_name="cab_bookings")
    op.drop_index("ix_cab_bookings_date_time", table_name="cab_bookings")
    op.drop_index("ix_cab_bookings_created_at", table_name="cab_bookings")
    op.drop_index(
        "ix_cab_bookings_assigned_offer_expiry",
        table_name="cab_bookings",
        postgresql_where=sa.text("status = 'assigned'"),
    )
    op.drop_table("cab_bookings")
    op.drop_index("ix_drivers_status_lat", table_name="drivers")
    op.drop_table("drivers")
    op.drop_index("ix_users_role", table_name="users")
    op.drop_table("users")
