"""Alembic, driven from code so ``smartroute db …`` works from an installed package."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, pool

import migrations
from dispatch.db import SessionLimits, set_role_limits, sqlalchemy_url
from smartroute.infra.settings import Settings


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    # Alembic's config is a ConfigParser: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url).replace("%", "%%"))
    return config


def session_limits(settings: Settings) -> SessionLimits:
    return SessionLimits(
        idle_in_transaction_s=settings.db_idle_in_transaction_timeout_s,
        statement_s=settings.db_statement_timeout_s,
        lock_s=settings.db_lock_timeout_s,
    )


def upgrade(database_url: str, revision: str = "head", settings: Settings | None = None) -> None:
    """Migrate to ``revision``, then set the role's session limits from ``settings`` (by
    default the environment's), which every engine checks for when it connects."""
    command.upgrade(alembic_config(database_url), revision)
    apply_session_limits(database_url, session_limits(settings or Settings.from_env()))


def apply_session_limits(database_url: str, limits: SessionLimits) -> None:
    """``ALTER ROLE CURRENT_USER IN DATABASE … SET`` each limit (dispatch.db.set_role_limits)."""
    engine = create_engine(sqlalchemy_url(database_url), poolclass=pool.NullPool)
    try:
        with engine.begin() as connection:
            set_role_limits(connection, limits)
    finally:
        engine.dispose()


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def check(database_url: str) -> None:
    """Raise if the models and the migrations have drifted apart."""
    command.check(alembic_config(database_url))
