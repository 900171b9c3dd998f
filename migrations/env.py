"""Alembic environment: the URL comes from the Alembic config or DATABASE_URL."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, event, pool

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


def _no_statement_timeout(connection) -> None:
    # A migration may rewrite or index a whole table: the role's statement_timeout, meant for
    # requests and tasks, must not cut it off halfway (and roll it back). LOCAL: only this
    # transaction, so a connection handed in by the caller keeps its own setting. The role's
    # lock_timeout still holds, so a migration stuck behind a long transaction fails rather
    # than queueing every request behind the lock it waits for; run it again.
    if connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
        connection.exec_driver_sql("SET LOCAL statement_timeout = 0")


def _migrate(connection) -> None:
    # On every transaction Alembic opens on this connection: one per run, but a migration's
    # autocommit block (CREATE INDEX CONCURRENTLY) ends it and a new one follows.
    event.listen(connection, "begin", _no_statement_timeout)
    try:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    finally:
        event.remove(connection, "begin", _no_statement_timeout)


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
