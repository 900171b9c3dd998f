"""The Socket.IO relay: pushes assignments to drivers and changes to admins and riders.

Run as its own process (``smartroute relay`` starts ``python -m web.relay``). eventlet
must patch the standard library before anything else is imported, or Redis calls hang
(Flask-SocketIO #235), so the patch is the first thing this module does. The async mode
is configuration (``SMARTROUTE_RELAY_ASYNC_MODE``): moving to gevent or threading is a
change of that variable. The relay touches no database: it learns who a token belongs
to from the API's token cache in Redis, and replays missed events from Redis streams.
"""

import os

ASYNC_MODE = os.environ.get("SMARTROUTE_RELAY_ASYNC_MODE") or "eventlet"
if ASYNC_MODE == "eventlet":
    import eventlet

    eventlet.monkey_patch()

# ruff: noqa: E402 - everything below must come after the monkey patch.
import argparse
import logging

import redis
import socketio as socketio_lib
from flask import Flask, Response, request
from flask_socketio import SocketIO, emit, join_room
from prometheus_client import CONTENT_TYPE_LATEST

from dispatch.outbox import ADMIN_ROOM, driver_room, rider_room
from smartroute import token_cache
from smartroute.logs import configure_logging
from smartroute.metrics import RELAY_CONNECTIONS, RELAY_REPLAYED, exposition
from smartroute.push import CHANNEL, missed
from smartroute.settings import Settings

log = logging.getLogger("smartroute.relay")


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
        # Same-origin only unless origins are configured: never "*" (cross-site hijacking).
        cors_allowed_origins=list(settings.relay_cors_origins),
        ping_interval=25,
        ping_timeout=60,
        max_http_buffer_size=settings.relay_max_message_bytes,
    )
    identities: dict[str, tuple[int, str]] = {}

    @socketio.on("connect")
    def connect(auth):
        token = auth.get("token") if isinstance(auth, dict) else None
        identity = token_cache.lookup(cache, token) if isinstance(token, str) else None
        if identity is None:
            raise ConnectionRefusedError("unauthorized: a valid token is required in auth")
        user_id, role = identity
        identities[request.sid] = identity
        rooms = rooms_for(user_id, role)
        for room in rooms:
            join_room(room)
        RELAY_CONNECTIONS.labels(role).inc()
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
            RELAY_CONNECTIONS.labels(identity[1]).dec()

    @socketio.on("join_driver_room")
    def join_driver(data=None):
        user_id, role = identities[request.sid]
        wanted = data.get("driver_id") if isinstance(data, dict) else None
        if role != "driver" or wanted != user_id:
            emit("error", {"code": "forbidden", "message": "a driver may join only its own room"})
            return
        join_room(driver_room(user_id))

    @socketio.on("join_admin_room")
    def join_admin(_data=None):
        if identities[request.sid][1] != "admin":
            emit("error", {"code": "forbidden", "message": "only admins join the admin room"})
            return
        join_room(ADMIN_ROOM)

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


def main() -> None:
    parser = argparse.ArgumentParser(description="SmartRoute's Socket.IO relay")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    settings = Settings.from_env()
    configure_logging(settings)
    if settings.redis_url is None:
        raise SystemExit("the relay needs REDIS_URL (smartroute relay fills it in)")
    app, socketio = create_relay(settings)
    log.info("relay listening on %s:%s (%s)", args.host, args.port, settings.relay_async_mode)
    # debug=False always: the relay never serves Werkzeug's interactive debugger.
    socketio.run(app, host=args.host, port=args.port, log_output=False, debug=False,
                 use_reloader=False)


if __name__ == "__main__":
    main()
