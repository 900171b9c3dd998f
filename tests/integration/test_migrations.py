"""Migrations run up, down and up again on an empty database, and match the models."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect, make_url

from dispatch.db import sqlalchemy_url
from dispatch.models import Base
from smartroute.infra import migrate
from smartroute.infra.embedded import ensure_database


def _tables(url: str) -> set[str]:
    engine = create_engine(sqlalchemy_url(url))
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_up_down_up_and_no_drift(settings):
    url = make_url(settings.database_url)
    ensure_database(
        url.set(database="postgres").render_as_string(hide_password=False),
        "smartroute_migrations_test",
    )
    empty = url.set(database="smartroute_migrations_test").render_as_string(hide_password=False)
    migrate.downgrade(empty, "base")  # Whatever an earlier run left behind.
    assert _tables(empty) == set()

    migrate.upgrade(empty)
    assert _tables(empty) == set(Base.metadata.tables)
    migrate.downgrade(empty, "base")
    assert _tables(empty) == set()
    migrate.upgrade(empty)
    migrate.check(empty)  # Raises if autogenerate would write anything.
