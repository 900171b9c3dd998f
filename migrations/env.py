"""Alembic environment: the URL comes from the Alembic config or DATABASE_URL."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool, text

from dispatch.db import sqlalchemy_url
from dispatch.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("no database: set DATABASE_URL or use `smartroute db upgrade`")
    return sqlalchemy_url(url)


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _migrate(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        # A migration may rewrite or index a whole table: the role's statement_timeout,
        # meant for requests and tasks, must not cut it off halfway (and roll it back).
        # LOCAL: only this transaction. The role's lock_timeout still holds, so a migration
        # stuck behind a long transaction fails rather than queueing every request behind
        # the lock it waits for; run it again.
        connection.execute(text("SET LOCAL statement_timeout = 0"))
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        _migrate(connectable)
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        _migrate(connection)
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
