"""The HTTP side of SmartRoute: the Flask app factory, the API and health."""

from __future__ import annotations

from flask import Flask
from flask.json.provider import DefaultJSONProvider
from werkzeug.middleware.proxy_fix import ProxyFix

from dispatch.db import make_sessionmaker
from smartroute.infra.celery_app import create_celery
from smartroute.infra.database import database_engine
from smartroute.infra.enqueue import Enqueue
from smartroute.infra.settings import Settings
from smartroute.infra.snapshots import redis_client
from web.runtime import Runtime, close_db


def create_app(settings: Settings | None = None) -> Flask:
    """Build the API app. Settings default to the environment; services must be reachable."""
    from web.api import IdConverter, api
    from web.console import console
    from web.errors import register_error_handlers
    from web.health import health
    from web.limits import AddressGate, RateLimits, guard_edge
    from web.metrics import metrics, time_requests
    from web.openapi import openapi

    settings = settings or Settings.from_env()
    database_url, redis_url = settings.database_url, settings.redis_url
    if database_url is None or redis_url is None:
        raise RuntimeError(
            "the API needs DATABASE_URL and REDIS_URL; `smartroute api` fills them in "
            "with embedded services when they are unset"
        )
    secret_key = settings.secret_key
    if secret_key is None:
        raise RuntimeError(
            "the API needs SMARTROUTE_SECRET_KEY to sign tokens; `smartroute api` "
            "generates one in the data folder when it is unset"
        )
    # No app-wide /static: the console's blueprint serves its own files.
    app = Flask(__name__, static_folder=None)
    # Never the interactive debugger, whatever FLASK_DEBUG says: it runs code on request.
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes, DEBUG=False, PROPAGATE_EXCEPTIONS=False
    )
    app.debug = False
    assert isinstance(app.json, DefaultJSONProvider)  # Flask's own, unless a subclass says.
    app.json.sort_keys = False
    # Every connection opened is kept: the threads bound how many there are, and a pool that
    # closes what it opened beyond five makes PostgreSQL start a backend per busy request.
    engine = database_engine(settings, database_url, "smartroute-api", keep_all=True)
    replica = (
        database_engine(
            settings, settings.database_replica_url, "smartroute-api-replica", keep_all=True
        )
        if settings.database_replica_url
        else engine
    )
    if settings.trusted_proxy_hops:
        # The client's address is the one the nearest trusted proxy saw: the hops-th entry
        # from the right of X-Forwarded-For. With no hops configured the header is ignored,
        # since any client can write it.
        # Flask's documented way to wrap its WSGI app; its stubs call it a method.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.trusted_proxy_hops
        )
    cache = redis_client(redis_url)
    celery = create_celery(settings)
    app.extensions["smartroute"] = Runtime(
        settings=settings,
        secret_key=secret_key,
        engine=engine,
        sessions=make_sessionmaker(engine),
        read_sessions=make_sessionmaker(replica),
        celery=celery,
        enqueue=Enqueue(celery, cache, settings.batch_window),
        redis=cache,
        limits=RateLimits(
            redis_url,
            {
                "booking": (settings.booking_limit_per_token, settings.booking_limit_per_address),
                "location": (
                    settings.location_limit_per_token,
                    settings.location_limit_per_address,
                ),
                "quote": (settings.quote_limit_per_token, settings.quote_limit_per_address),
                "refresh": (settings.refresh_limit_per_token, None),
                "driver action": (settings.driver_action_limit_per_token, None),
            },
        ),
    )
    guard_edge(
        app,
        AddressGate(
            cache, settings.request_limit_per_address, settings.auth_failure_limit_per_address
        ),
        settings.max_body_bytes,
    )
    app.url_map.converters["id"] = IdConverter
    app.teardown_appcontext(close_db)
    register_error_handlers(app)
    app.register_blueprint(api)
    app.register_blueprint(health)
    app.register_blueprint(metrics)
    app.register_blueprint(openapi)
    app.register_blueprint(console)
    time_requests(app)
    return app
