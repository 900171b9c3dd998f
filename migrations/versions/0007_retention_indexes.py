"""Indexes for the prune tasks: idempotency keys by age, access tokens by expiry and revocation.

Built CONCURRENTLY: both tables grew without bound until now, and a plain CREATE INDEX would
hold off every booking with an Idempotency-Key (and every token issued) while it ran.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 15:35:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"], None),
    ("ix_access_tokens_expires_at", "access_tokens", ["expires_at"], None),
    (
        "ix_access_tokens_revoked_at",
        "access_tokens",
        ["revoked_at"],
        sa.text("revoked_at IS NOT NULL"),
    ),
)


def upgrade() -> None:
    # CONCURRENTLY cannot run inside a transaction; outside migrations/env.py's transaction
    # its SET LOCAL no longer holds, so the role's statement_timeout is lifted for this
    # session while the indexes build, and restored after.
    with op.get_context().autocommit_block():
        op.execute("SET statement_timeout = 0")
        for name, table, columns, where in INDEXES:
            op.create_index(
                name,
                table,
                columns,
                postgresql_concurrently=True,
                postgresql_where=where,
                if_not_exists=True,
            )
        op.execute("RESET statement_timeout")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name, table, _columns, _where in INDEXES:
            op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)
