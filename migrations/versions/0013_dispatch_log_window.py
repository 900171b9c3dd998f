"""The dispatch log records the window each batch waited.

A nullable column without a default: adding it rewrites nothing and holds its lock only
for a moment.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 07:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("dispatch_log", sa.Column("window_s", sa.Double(), nullable=True))


def downgrade() -> None:
    op.drop_column("dispatch_log", "window_s")
