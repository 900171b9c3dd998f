"""``smartroute db``: migrate the database and check it is at head."""

from __future__ import annotations

import logging

import click

from smartroute.cli.startup import (
    register_admin_token,
    settings_from_env,
    with_admin_token,
    with_services,
)

log = logging.getLogger("smartroute")


@click.group()
def db() -> None:
    """Database migrations."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Migrate the database up to REVISION (default: head), then register the admin token."""
    from smartroute.infra import migrate

    settings, services = with_services(settings_from_env())
    try:
        migrate.upgrade(services.database_url, revision, settings)
        if revision == "head":
            # Only the head schema is known to have the tables the token goes into.
            register_admin_token(with_admin_token(settings), caches_required=False)
    finally:
        services.stop()


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Migrate the database down to REVISION ('base' empties it)."""
    from smartroute.infra import migrate

    settings, services = with_services(settings_from_env())
    try:
        migrate.downgrade(services.database_url, revision)
    finally:
        services.stop()


@db.command("check")
def db_check() -> None:
    """Fail if the models and the migrations disagree."""
    from smartroute.infra import migrate

    settings, services = with_services(settings_from_env())
    try:
        migrate.check(services.database_url)
    finally:
        services.stop()
    click.echo("models and migrations agree")
