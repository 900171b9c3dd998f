"""Access tokens: one revocable row per bearer token, moved out of users.

Tokens issued before this revision were opaque; each keeps working, through its row, until
30 days after the upgrade. The bootstrap admin's token never expires.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 02:10:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "access_tokens",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "issued_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "expires_at IS NULL OR expires_at > issued_at",
            name=op.f("ck_access_tokens_expires_after_issue"),
        ),
        sa.CheckConstraint(
            "revoked_at IS NULL OR revoked_at >= issued_at",
            name=op.f("ck_access_tokens_revoked_after_issue"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_access_tokens_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_access_tokens_token_hash")),
    )
    op.create_index(op.f("ix_access_tokens_user_id"), "access_tokens", ["user_id"])
    op.execute(
        "INSERT INTO access_tokens (user_id, token_hash, issued_at, expires_at) "
        "SELECT id, token_hash, created_at, "
        "CASE WHEN name = 'bootstrap-admin' AND role = 'admin' THEN NULL "
        "ELSE greatest(now(), created_at) + interval '30 days' END FROM users"
    )
    op.drop_constraint(op.f("uq_users_token_hash"), "users", type_="unique")
    op.drop_column("users", "token_hash")


def downgrade() -> None:
    op.add_column("users", sa.Column("token_hash", sa.String(length=64), nullable=True))
    # Each user keeps the newest of their live tokens; the others stop working.
    op.execute(
        "UPDATE users u SET token_hash = t.token_hash FROM ("
        " SELECT DISTINCT ON (user_id) user_id, token_hash FROM access_tokens"
        " WHERE revoked_at IS NULL ORDER BY user_id, issued_at DESC) t WHERE t.user_id = u.id"
    )
    op.execute(
        "UPDATE users SET token_hash = md5(random()::text) || md5(random()::text) "
        "WHERE token_hash IS NULL"
    )
    op.alter_column("users", "token_hash", nullable=False)
    op.create_unique_constraint(op.f("uq_users_token_hash"), "users", ["token_hash"])
    op.drop_index(op.f("ix_access_tokens_user_id"), table_name="access_tokens")
    op.drop_table("access_tokens")
