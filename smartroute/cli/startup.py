"""What every command does before it starts a process: read the settings, start embedded
services where no URL is given, migrate, and register the operator's admin token."""

from __future__ import annotations

import logging
import time
from typing import Any

import click

from smartroute.infra.embedded import EmbeddedServices, MissingExtra, ensure_services
from smartroute.infra.logs import configure_logging
from smartroute.infra.settings import ConfigError, Settings

log = logging.getLogger("smartroute")


def settings_from_env() -> Settings:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    configure_logging(settings)
    return settings


def with_services(settings: Settings) -> tuple[Settings, EmbeddedServices]:
    """Settings whose service URLs are filled in, starting embedded services where unset."""
    settings, _ = kept_secret(settings, "secret_key")
    try:
        services = ensure_services(settings.database_url, settings.redis_url, settings.data_dir)
    except MissingExtra as exc:
        raise click.ClickException(str(exc)) from None
    return settings.with_services(services.database_url, services.redis_url), services


def kept_secret(settings: Settings, name: str) -> tuple[Settings, bool]:
    """The secret setting ``name``, or one generated once and kept (mode 600) in the data
    folder, so every process on this machine shares it. Returns whether it was generated."""
    if getattr(settings, name):
        return settings, False
    from dataclasses import replace

    from dispatch.tokens import new_secret

    path = settings.data_dir / name
    if path.exists():
        kept: dict[str, Any] = {name: path.read_text().strip()}
        return replace(settings, **kept), False
    secret = new_secret()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(secret + "\n")
    generated: dict[str, Any] = {name: secret}
    return replace(settings, **generated), True


def prepare_database(settings: Settings) -> None:
    """Migrate to head and make sure the bootstrap admin holds the configured token."""
    from smartroute.infra import migrate

    migrate.upgrade(required(settings.database_url, "DATABASE_URL"), settings=settings)
    register_admin_token(settings, caches_required=True)


def required(value: str | None, name: str) -> str:
    """A setting the start sequence has filled in by now (the service URLs once
    ``with_services`` has run, the admin token once ``with_admin_token`` has)."""
    if value is None:
        raise click.ClickException(f"{name} is not set")
    return value


def with_admin_token(settings: Settings) -> Settings:
    """Settings with an admin token: SMARTROUTE_ADMIN_TOKEN, or the data folder's."""
    settings, generated = kept_secret(settings, "admin_token")
    if generated:
        log.warning(
            "SMARTROUTE_ADMIN_TOKEN is unset: generated one, saved in %s",
            settings.data_dir / "admin_token",
        )
    return settings


# How long a start keeps trying to tell Redis's token caches about revoked bootstrap tokens.
CACHE_RETRY_S = 10.0


def register_admin_token(settings: Settings, *, caches_required: bool) -> None:
    """Make the configured admin token work, and every earlier one stop working, before
    anything serves: ``up``, ``api`` and ``db upgrade`` all do this, so whichever start
    sequence an operator uses (Compose, a Kubernetes migrate job, one ``up``), the token
    works. Several processes may do it at once (dispatch.users takes a lock).

    Revoked tokens are also dropped from Redis's token caches, which the API and the relay
    consult before the database. Without ``caches_required`` (``db upgrade``, which runs
    before Redis may be up), an unreachable Redis is only a warning: the API's start does it
    again, and refuses to start until it has been done.
    """
    import datetime as dt

    import redis
    from sqlalchemy.exc import ProgrammingError

    from dispatch.db import make_engine, make_sessionmaker
    from dispatch.users import (
        BootstrapTokenRefused,
        ensure_bootstrap_admin,
        revoked_bootstrap_hashes,
    )
    from smartroute.infra.snapshots import redis_client
    from smartroute.infra.token_cache import MARKER_TTL_S, forget

    engine = make_engine(
        required(settings.database_url, "DATABASE_URL"), pool_size=1, max_overflow=0
    )
    # Revocation markers live MARKER_TTL_S: a token revoked before that has none to renew.
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=MARKER_TTL_S)
    try:
        with make_sessionmaker(engine)() as session, session.begin():
            ensure_bootstrap_admin(
                session, required(settings.admin_token, "SMARTROUTE_ADMIN_TOKEN")
            )
            revoked = revoked_bootstrap_hashes(session, since)
    except BootstrapTokenRefused as exc:
        raise click.UsageError(f"SMARTROUTE_ADMIN_TOKEN: {exc}") from None
    except ProgrammingError as exc:
        if getattr(exc.orig, "pgcode", None) == "42P01":  # undefined_table
            raise click.ClickException(
                "the database has no tables yet: run `smartroute db upgrade` first"
            ) from None
        raise
    finally:
        engine.dispose()
    client = redis_client(required(settings.redis_url, "REDIS_URL"))
    deadline = time.monotonic() + CACHE_RETRY_S
    while True:
        try:
            forget(client, revoked)
            break
        except (redis.RedisError, OSError) as exc:
            if time.monotonic() < deadline:
                time.sleep(0.5)  # Redis may be starting beside us; nothing to await.
                continue
            if caches_required:
                raise click.ClickException(
                    f"Redis is unreachable ({exc.__class__.__name__}): revoked admin tokens "
                    "cannot be dropped from the token cache, so the API will not start"
                ) from None
            log.warning(
                "Redis is unreachable: revoked admin tokens stay in the token cache "
                "until the API starts"
            )
            break
