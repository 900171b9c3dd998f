"""Ride history and ratings: indexes for each party's history and the admin search, newest
first by (created_at, id); the ratings table and each user's rating summary.

The indexes on cab_bookings are built CONCURRENTLY: it is the busiest table, and a plain
CREATE INDEX would hold off every booking and every driver action while it ran.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 19:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HISTORY_INDEXES = (
    ("ix_cab_bookings_user_history", ["user_id", "created_at", "id"]),
    ("ix_cab_bookings_driver_history", ["driver_id", "created_at", "id"]),
    ("ix_cab_bookings_region_history", ["region", "created_at", "id"]),
    ("ix_cab_bookings_created_at_id", ["created_at", "id"]),
)


def upgrade() -> None:
    op.create_table(
        "ratings",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("booking_id", sa.BigInteger(), nullable=False),
        sa.Column("rater_role", sa.String(length=16), nullable=False),
        sa.Column("rater_id", sa.BigInteger(), nullable=False),
        sa.Column("ratee_id", sa.BigInteger(), nullable=False),
        sa.Column("stars", sa.SmallInteger(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("rater_role IN ('rider', 'driver')", name=op.f("ck_ratings_rater_role")),
        sa.CheckConstraint("stars BETWEEN 1 AND 5", name=op.f("ck_ratings_stars_range")),
        sa.CheckConstraint(
            "comment IS NULL OR char_length(comment) <= 500",
            name=op.f("ck_ratings_comment_length"),
        ),
        sa.CheckConstraint("rater_id <> ratee_id", name=op.f("ck_ratings_not_self")),
        sa.ForeignKeyConstraint(
            ["booking_id"],
            ["cab_bookings.id"],
            name=op.f("fk_ratings_booking_id_cab_bookings"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["rater_id"], ["users.id"], name=op.f("fk_ratings_rater_id_users")),
        sa.ForeignKeyConstraint(["ratee_id"], ["users.id"], name=op.f("fk_ratings_ratee_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ratings")),
        sa.UniqueConstraint("booking_id", "rater_role", name=op.f("uq_ratings_booking_rater_role")),
    )
    op.create_index("ix_ratings_ratee_id", "ratings", ["ratee_id", "created_at"])
    op.create_table(
        "rating_summaries",
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("ratings", sa.Integer(), nullable=False),
        sa.Column("stars_total", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("ratings >= 1", name=op.f("ck_rating_summaries_ratings_positive")),
        sa.CheckConstraint(
            "stars_total BETWEEN ratings AND 5 * ratings",
            name=op.f("ck_rating_summaries_stars_total_range"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_rating_summaries_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_rating_summaries")),
    )
    # CONCURRENTLY cannot run inside a transaction; as in 0007, the role's statement_timeout
    # is lifted for this session while the indexes build, and restored after.
    with op.get_context().autocommit_block():
        op.execute("SET statement_timeout = 0")
        for name, columns in HISTORY_INDEXES:
            op.create_index(
                name,
                "cab_bookings",
                columns,
                postgresql_concurrently=True,
                if_not_exists=True,
            )
        op.execute("RESET statement_timeout")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name, _columns in HISTORY_INDEXES:
            op.drop_index(
                name, table_name="cab_bookings", postgresql_concurrently=True, if_exists=True
            )
    op.drop_table("rating_summaries")
    op.drop_index("ix_ratings_ratee_id", table_name="ratings")
    op.drop_table("ratings")
