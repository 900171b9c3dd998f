"""Quotes, fares and surge: the quotes table, each region's surge level, and a booking's price.

The booking's new columns are nullable and added without a default, so adding them does
not rewrite the table. Their CHECKs are added NOT VALID and then validated, and the unique
index on quote_id is built CONCURRENTLY, so bookings keep being written while the existing
rows are checked and indexed.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 19:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BOOKING_CHECKS = (
    (
        "ck_cab_bookings_fare_terms",
        "(quote_id IS NULL) = (quoted_fare IS NULL) "
        "AND (quote_id IS NULL) = (fare_currency IS NULL) "
        "AND (quote_id IS NULL) = (fare IS NULL)",
    ),
    ("ck_cab_bookings_quoted_fare_positive", "quoted_fare >= 0"),
    (
        "ck_cab_bookings_final_fare_when_completed",
        "final_fare IS NULL OR (final_fare >= 0 AND status = 'completed' "
        "AND quoted_fare IS NOT NULL)",
    ),
)


def _timestamp(name: str, *, nullable: bool = False, now: bool = False) -> sa.Column:
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        server_default=sa.text("now()") if now else None,
        nullable=nullable,
    )


def upgrade() -> None:
    op.create_table(
        "quotes",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("region", sa.String(length=32), nullable=False),
        sa.Column("pickup_lat", sa.Double(), nullable=False),
        sa.Column("pickup_lng", sa.Double(), nullable=False),
        sa.Column("dropoff_lat", sa.Double(), nullable=False),
        sa.Column("dropoff_lng", sa.Double(), nullable=False),
        _timestamp("pickup_at", nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        *(
            sa.Column(name, sa.Integer(), nullable=False)
            for name in (
                "base",
                "per_km",
                "per_minute",
                "minimum",
                "cancellation_fee",
                "no_show_fee",
                "surge_pct",
                "distance_m",
                "duration_s",
                "distance_amount",
                "time_amount",
                "amount",
            )
        ),
        sa.Column("pickup_eta_s", sa.Integer(), nullable=True),
        _timestamp("created_at", now=True),
        _timestamp("expires_at"),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name=op.f("ck_quotes_currency")),
        sa.CheckConstraint(
            "base >= 0 AND per_km >= 0 AND per_minute >= 0 AND minimum >= 0 "
            "AND cancellation_fee >= 0 AND no_show_fee >= 0",
            name=op.f("ck_quotes_tariff_positive"),
        ),
        sa.CheckConstraint(
            "distance_m >= 0 AND duration_s >= 0 AND distance_amount >= 0 "
            "AND time_amount >= 0 AND amount >= 0",
            name=op.f("ck_quotes_estimate_positive"),
        ),
        sa.CheckConstraint("surge_pct >= 100", name=op.f("ck_quotes_surge_at_least_one")),
        sa.CheckConstraint(
            "expires_at > created_at", name=op.f("ck_quotes_expires_after_creation")
        ),
        sa.CheckConstraint(
            "pickup_lat BETWEEN -90 AND 90", name=op.f("ck_quotes_pickup_lat_range")
        ),
        sa.CheckConstraint(
            "pickup_lng BETWEEN -180 AND 180", name=op.f("ck_quotes_pickup_lng_range")
        ),
        sa.CheckConstraint(
            "dropoff_lat BETWEEN -90 AND 90", name=op.f("ck_quotes_dropoff_lat_range")
        ),
        sa.CheckConstraint(
            "dropoff_lng BETWEEN -180 AND 180", name=op.f("ck_quotes_dropoff_lng_range")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_quotes_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quotes")),
    )
    op.create_index("ix_quotes_user_id", "quotes", ["user_id"])
    op.create_index("ix_quotes_expires_at", "quotes", ["expires_at"])

    op.create_table(
        "surge_levels",
        sa.Column("region", sa.String(length=32), nullable=False),
        sa.Column("multiplier_pct", sa.Integer(), nullable=False),
        sa.Column("demand", sa.Integer(), nullable=False),
        sa.Column("supply", sa.Integer(), nullable=False),
        _timestamp("updated_at", now=True),
        sa.CheckConstraint(
            "multiplier_pct >= 100", name=op.f("ck_surge_levels_multiplier_at_least_one")
        ),
        sa.CheckConstraint(
            "demand >= 0 AND supply >= 0", name=op.f("ck_surge_levels_counts_positive")
        ),
        sa.PrimaryKeyConstraint("region", name=op.f("pk_surge_levels")),
    )

    op.add_column("cab_bookings", sa.Column("quote_id", sa.BigInteger(), nullable=True))
    op.add_column("cab_bookings", sa.Column("fare_currency", sa.String(length=3), nullable=True))
    op.add_column("cab_bookings", sa.Column("quoted_fare", sa.Integer(), nullable=True))
    op.add_column("cab_bookings", sa.Column("final_fare", sa.Integer(), nullable=True))
    op.add_column(
        "cab_bookings",
        sa.Column("fare", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )
    op.execute(
        "ALTER TABLE cab_bookings ADD CONSTRAINT fk_cab_bookings_quote_id_quotes "
        "FOREIGN KEY (quote_id) REFERENCES quotes (id) NOT VALID"
    )
    for name, condition in BOOKING_CHECKS:
        op.execute(f"ALTER TABLE cab_bookings ADD CONSTRAINT {name} CHECK ({condition}) NOT VALID")
    for name in ("fk_cab_bookings_quote_id_quotes", *(name for name, _ in BOOKING_CHECKS)):
        op.execute(f"ALTER TABLE cab_bookings VALIDATE CONSTRAINT {name}")

    # CONCURRENTLY cannot run inside a transaction (as in 0007).
    with op.get_context().autocommit_block():
        op.execute("SET statement_timeout = 0")
        op.create_index(
            "uq_cab_bookings_quote_id",
            "cab_bookings",
            ["quote_id"],
            unique=True,
            postgresql_where=sa.text("quote_id IS NOT NULL"),
            postgresql_concurrently=True,
            if_not_exists=True,
        )
        op.execute("RESET statement_timeout")


def downgrade() -> None:
    op.drop_index("uq_cab_bookings_quote_id", table_name="cab_bookings")
    for name, _ in reversed(BOOKING_CHECKS):
        op.drop_constraint(op.f(name), "cab_bookings", type_="check")
    op.drop_constraint(op.f("fk_cab_bookings_quote_id_quotes"), "cab_bookings", type_="foreignkey")
    for column in ("fare", "final_fare", "quoted_fare", "fare_currency", "quote_id"):
        op.drop_column("cab_bookings", column)
    op.drop_table("surge_levels")
    op.drop_index("ix_quotes_expires_at", table_name="quotes")
    op.drop_index("ix_quotes_user_id", table_name="quotes")
    op.drop_table("quotes")
