"""Token families: when the holder first signed in, carried over on every refresh.

A refresh revokes the token it was given and issues the next one with the same
``session_started_at``, so a family cannot be refreshed past its maximum lifetime. Existing
tokens start their family at their own issue time.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 15:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "access_tokens",
        sa.Column(
            "session_started_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=True,
        ),
    )
    op.execute("UPDATE access_tokens SET session_started_at = issued_at")
    op.alter_column("access_tokens", "session_started_at", nullable=False)
    op.create_check_constraint(
        op.f("ck_access_tokens_session_started_before_issue"),
        "access_tokens",
        "session_started_at <= issued_at",
    )


def downgrade() -> None:
    op.drop_constraint(
        op.f("ck_access_tokens_session_started_before_issue"), "access_tokens", type_="check"
    )
    op.drop_column("access_tokens", "session_started_at")
