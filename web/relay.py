"""The Socket.IO relay: pushes assignments to drivers and changes to admins and riders.

Run as its own process, ``python -m smartroute.relay`` (``smartroute relay`` starts it),
which lets eventlet patch the standard library before this package is imported. The async
mode is configuration (``SMARTROUTE_RELAY_ASYNC_MODE``): moving to gevent or threading is
a change of that variable. It checks a signed token's signature and expiry itself, learns
whether a token is live (not revoked) from the API's token cache in Redis, and replays
missed events from Redis streams. Every few seconds it drops connections whose token has
since expired or been revoked.

Drivers may also act on their bookings over their connection (``driver_action``,
web.relay_actions): the only thing the relay writes to the database, through the same
domain functions as the API.
"""

import argparse
import datetime as dt
import logging

import redis
import socketio as socketio_lib
from flask import Flask, Response, request
from flask_socketio import SocketIO, emit, join_room
from prometheus_client import CONTENT_TYPE_LATEST

from dispatch import tokens
from dispatch.db import make_sessionmaker
from dispatch.outbox import ADMIN_ROOM, driver_room, rider_room
from smartroute import token_cache
from smartroute.logs import configure_logging
from smartroute.metrics import RELAY_CONNECTIONS, RELAY_REPLAYED, exposition
from smartroute.push import CHANNEL, missed
from smartroute.settings import Settings
from web import database_engine, relay_shutdown
from web.relay_actions import DriverActions, Identity
from workers.app import create_celery

log = logging.getLogger("smartroute.relay")


def identify(settings: Settings, cache: redis.Redis, token: object) -> Identity | None:
    """The identity behind a token the relay should accept, or None."""
    if not isinstance(token, str) or not token or len(token) > tokens.MAX_TOKEN_LENGTH:
        return None
    claims = None
    if tokens.looks_signed(token):
        claims = tokens.verify(settings.secret_key, token)
        if claims is None:
            return None  # Forged or expired: no Redis round trip.
    live = token_cache.lookup(cache, token)
    if live is None:
        return None  # Unknown to the API, or revoked.
    user_id, role = live
    return Identity(user_id, role, tokens.hash_token(token),
                    claims.expires_at if claims else None)


def rooms_for(user_id: int, role: str) -> list[str]:
    """The rooms the server puts a client in: decided by its token, never by the client."""
    if role == "admin":
        return [ADMIN_ROOM]
    if role == "driver":
        return [driver_room(user_id)]
    return [rider_room(user_id)]


def create_relay(settings: Settings) -> tuple[Flask, SocketIO]:
    app = Flask(__name__)
    cache = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
    socketio = SocketIO(
        app,
        async_mode=settings.relay_async_mode,
        # Named explicitly: Flask-SocketIO would pick kombu for a unix:// Redis URL.
        client_manager=socketio_lib.RedisManager(settings.redis_url, channel=CHANNEL),
        # Same origin only unless origins are configured; never "*" (cross-site hijacking).
        # None is engine.io's "same origin only"; an empty list would switch the check off.
        cors_allowed_origins=list(settings.relay_cors_origins) or None,
        ping_interval=25,
        ping_timeout=60,
        max_http_buffer_size=settings.relay_max_message_bytes,
    )
    identities: dict[str, Identity] = {}
    actions = DriverActions(
        settings,
        make_sessionmaker(database_engine(settings, settings.database_url, "smartroute-relay",
                                        keep_all=True)),
        create_celery(settings),
        cache,
    )

    @socketio.on("connect")
    def connect(auth):
        token = auth.get("token") if isinstance(auth, dict) else None
        identity = identify(settings, cache, token)
        if identity is None:
            raise ConnectionRefusedError("unauthorized: a valid token is required in auth")
        identities[request.sid] = identity
        rooms = rooms_for(identity.user_id, identity.role)
        for room in rooms:
            join_room(room)
        RELAY_CONNECTIONS.labels(identity.role).inc()
        last = auth.get("last_event_id")
        if isinstance(last, int) and not isinstance(last, bool) and last >= 0:
            backlog = sorted(e for room in rooms for e in missed(cache, room, last))
            for _event_id, event, data in backlog:
                emit(event, data, to=request.sid)
            RELAY_REPLAYED.inc(len(backlog))

    @socketio.on("disconnect")
    def disconnect(*_args):
        identity = identities.pop(request.sid, None)
        if identity is not None:
            RELAY_CONNECTIONS.labels(identity.role).dec()

    @socketio.on("join_driver_room")
    def join_driver(data=None):
        identity = identities[request.sid]
        user_id, role = identity.user_id, identity.role
        wanted = data.get("driver_id") if isinstance(data, dict) else None
        if role != "driver" or wanted != user_id:
            emit("error", {"code": "forbidden", "message": "a driver may join only its own room"})
            return
        join_room(driver_room(user_id))

    @socketio.on("join_admin_room")
    def join_admin(_data=None):
        if identities[request.sid].role != "admin":
            emit("error", {"code": "forbidden", "message": "only admins join the admin room"})
            return
        join_room(ADMIN_ROOM)

    @socketio.on("driver_action")
    def driver_action(data=None):
        """Acknowledged with what ``POST /v1/bookings/<id>/<action>`` would answer."""
        answer, ended = actions.handle(identities[request.sid], data)
        if ended:
            socketio.server.disconnect(request.sid, namespace="/")
        return answer

    def revalidate_forever():
        while True:
            socketio.sleep(settings.relay_revalidate_every_s)
            try:
                for sid in ended_sessions(cache, identities):
                    socketio.server.disconnect(sid, namespace="/")
            except (redis.RedisError, OSError) as exc:
                log.warning("token revalidation skipped: %s", exc.__class__.__name__)

    socketio.start_background_task(revalidate_forever)

    @app.get("/health")
    def health():
        try:
            cache.ping()
        except (redis.RedisError, OSError) as exc:
            return {"status": "degraded", "redis": {"status": "down",
                                                     "error": exc.__class__.__name__}}, 503
        return {"status": "ok", "redis": {"status": "ok"}}

    @app.get("/metrics")
    def metrics():
        return Response(exposition(), mimetype=CONTENT_TYPE_LATEST)

    return app, socketio


def ended_sessions(cache: redis.Redis, identities: dict[str, Identity]) -> list[str]:
    """Connections whose token has expired or been revoked since they connected."""
    now = dt.datetime.now(dt.UTC)
    current = list(identities.items())
    revoked = token_cache.revoked(cache, sorted({i.token_hash for _, i in current}))
    return [sid for sid, identity in current
            if identity.token_hash in revoked
            or identity.expired(now)]


def main() -> None:
    parser = argparse.ArgumentParser(description="SmartRoute's Socket.IO relay")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    settings = Settings.from_env()
    configure_logging(settings)
    if None in (settings.database_url, settings.redis_url, settings.secret_key):
        raise SystemExit("the relay needs DATABASE_URL, REDIS_URL and SMARTROUTE_SECRET_KEY "
                         "(smartroute relay fills them in)")
    app, socketio = create_relay(settings)
    log.info("relay listening on %s:%s (%s)", args.host, args.port, settings.relay_async_mode)
    # Stops gracefully on SIGTERM; never serves Werkzeug's interactive debugger.
    relay_shutdown.serve(app, socketio, args.host, args.port)
