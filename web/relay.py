"""The Socket.IO relay: pushes assignments to drivers and changes to admins and riders.

Run as its own process, ``python -m smartroute.cli.relay`` (``smartroute relay`` starts it),
which lets eventlet patch the standard library before this package is imported. The async
mode is configuration (``SMARTROUTE_RELAY_ASYNC_MODE``). It identifies a token as the API
does (smartroute.infra.identity): signature and expiry with the key, liveness in PostgreSQL, never
from Redis; and replays missed events from Redis streams. Every second
(SMARTROUTE_RELAY_REVALIDATE_EVERY_S) one query drops connections whose token has since
expired or been revoked.

The async mode is eventlet (the default; ``smartroute.cli.relay`` says why) or threading, and
``create_relay`` gives either a WebSocket reader that bounds a whole message while reading
it (web.relay_transport).

Drivers may also act on their bookings over their connection (``driver_action``,
web.relay_actions), through the same domain functions as the API, and share their location
(``location``, web.relay_locations): buffered, written to Redis once a tick and to
PostgreSQL behind, once a flush, for every driver at once. After each flush the positions
go to the riders watching those drivers and to the admin dashboard (web.relay_tracking).
"""

import argparse
import datetime as dt
import gc
import logging
import resource

import redis
import socketio as socketio_lib
from flask import Flask, Response, request
from flask_socketio import SocketIO, emit, join_room
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from dispatch import tokens
from dispatch.eta import GreatCircleEta
from dispatch.outbox import ADMIN_ROOM, BOOKING_UPDATED, NEW_ASSIGNMENT, driver_room, rider_room
from dispatch.tracking import DRIVER_POSITION, DRIVER_POSITIONS
from smartroute.infra.celery_app import create_celery
from smartroute.infra.database import database_sessions
from smartroute.infra.driver_index import PingWriter
from smartroute.infra.identity import Identity
from smartroute.infra.identity import identify as shared_identify
from smartroute.infra.logs import configure_logging
from smartroute.infra.metrics import (
    RELAY_CONNECTIONS,
    RELAY_PUSHES,
    RELAY_REPLAYED,
    RELAY_RESYNCS,
    exposition,
    scrape_allowed,
)
from smartroute.infra.push import (
    CHANNEL,
    MAX_EVENT_ID,
    Resync,
    catch_up,
    emit_message,
    valid_event_id,
)
from smartroute.infra.redis_clients import waiting_redis
from smartroute.infra.settings import Settings
from web import relay_shutdown
from web.relay_actions import DriverActions
from web.relay_locations import Locations
from web.relay_memory import MemoryReturn, drop_cancelled_timers
from web.relay_rooms import RoomIndex
from web.relay_tracking import PositionFeed
from web.relay_transport import bound_transport

log = logging.getLogger("smartroute.relay")


def identify(secret_key: str, sessions: sessionmaker[Session], token: object) -> Identity | None:
    """The identity behind a token the relay should accept, or None: the API's check, with
    the database asked every time (one query by the token's unique hash)."""
    if not isinstance(token, str) or not token:
        return None
    try:
        with sessions() as session:
            return shared_identify(token, secret_key=secret_key, session=session)
    except SQLAlchemyError as exc:
        log.warning("token not checked, database unavailable: %s", exc.__class__.__name__)
        return None


def _sid() -> str:
    """The Socket.IO session of the event being handled, which Flask-SocketIO sets on the
    request."""
    # Flask's stubs know nothing of what Flask-SocketIO adds.
    sid: str = request.sid  # type: ignore[attr-defined]
    return sid


def rooms_for(user_id: int, role: str) -> list[str]:
    """The rooms the server puts a client in: decided by its token, never by the client."""
    if role == "admin":
        return [ADMIN_ROOM]
    if role == "driver":
        return [driver_room(user_id)]
    return [rider_room(user_id)]


PUSH_EVENTS = (NEW_ASSIGNMENT, BOOKING_UPDATED, DRIVER_POSITION, DRIVER_POSITIONS)
# Engine.IO's heartbeat: a ping to each client this often.
PING_INTERVAL_S = 25
# How often the relay looks whether drivers left enough memory to give back.
MEMORY_CHECK_EVERY_S = 5.0


def handle_inline(server: socketio_lib.Server, event: str) -> None:
    """Run ``event``'s handler in the green thread that read it off the connection.

    python-socketio starts a new green thread for every event, so that a handler that
    waits (a driver action's transaction) holds up nothing else. A location ping never
    waits: it is a few checks and a dict write, and the thread costs more than the ping.
    """
    spawning = server._handle_event

    def handle_event(eio_sid, namespace, id, data):
        if not (data and data[0] == event):
            return spawning(eio_sid, namespace, id, data)
        namespace = namespace or "/"
        sid = server.manager.sid_from_eio_sid(eio_sid, namespace)
        if server.manager.is_connected(sid, namespace):
            server._handle_event_internal(server, sid, eio_sid, data, namespace, id)
        return None

    server._handle_event = handle_event


class CountingRedisManager(RoomIndex, socketio_lib.RedisManager):
    """python-socketio's Redis manager, counting the pushes it receives to emit, on a pool
    whose callers wait for a connection rather than fail (smartroute.infra.redis_clients).

    Emits this relay publishes itself come back through the channel too; they carry its own
    host id and are not counted. Any other event name is "other", so whatever reaches the
    channel cannot grow the number of series."""

    def __init__(self, url: str, *, channel: str, connections: int, wait_s: float) -> None:
        super().__init__(url, channel=channel)
        self.connections, self.wait_s = connections, wait_s

    def _redis_connect(self) -> None:
        # As python-socketio's, on a waiting pool: its listener holds one connection for
        # good, and each publish borrows another.
        self.redis = waiting_redis(
            self.redis_url, connections=self.connections, wait_s=self.wait_s, socket_timeout=None
        )
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        self.connected = True

    def _handle_emit(self, message):
        if message.get("host_id") != self.host_id:
            event = message.get("event")
            RELAY_PUSHES.labels(event if event in PUSH_EVENTS else "other").inc()
        room = message.get("room")
        if isinstance(room, str) and room not in self.rooms.get(message.get("namespace"), ()):
            # Nobody in that room on this relay: python-socketio would encode the packet
            # before finding no one to send it to, and most riders are on other relays.
            return None
        return super()._handle_emit(message)

    def emit_each(self, messages: list[tuple[str, str, dict]]) -> None:
        """Emit each (room, event, data) on every relay, as ``emit`` would one at a time,
        but published in one pipeline: one Redis round trip however many rooms."""
        if not messages:
            return
        for room, event, data in messages:
            # This relay's own clients at once: its listener skips what it published.
            message = {"event": event, "data": [data], "namespace": "/", "room": room}
            self._handle_emit(message | {"method": "emit", "host_id": self.host_id})
        if not self.connected:
            self._redis_connect()
        with self.redis.pipeline(transaction=False) as pipe:
            for room, event, data in messages:
                pipe.publish(self.channel, emit_message(self.host_id, room, event, data))
            pipe.execute()


def create_relay(settings: Settings) -> tuple[Flask, SocketIO]:
    database_url, redis_url = settings.database_url, settings.redis_url
    secret_key = settings.secret_key
    if database_url is None or redis_url is None or secret_key is None:
        raise RuntimeError("the relay needs DATABASE_URL, REDIS_URL and SMARTROUTE_SECRET_KEY")
    app = Flask(__name__)
    cache = waiting_redis(
        redis_url, connections=settings.relay_redis_connections, wait_s=settings.relay_redis_wait_s
    )
    manager = CountingRedisManager(
        redis_url,
        channel=CHANNEL,
        connections=settings.relay_redis_connections,
        wait_s=settings.relay_redis_wait_s,
    )
    socketio = SocketIO(
        app,
        async_mode=settings.relay_async_mode,
        # Named explicitly: Flask-SocketIO would pick kombu for a unix:// Redis URL.
        client_manager=manager,
        # Same origin only unless origins are configured; never "*" (cross-site hijacking).
        # None is engine.io's "same origin only"; an empty list would switch the check off.
        cors_allowed_origins=list(settings.relay_cors_origins) or None,
        ping_interval=PING_INTERVAL_S,
        ping_timeout=60,
        max_http_buffer_size=settings.relay_max_message_bytes,
    )
    # Before any client connects: the limit holds for a message as it is read, before the
    # token in it (or any token at all) has been looked at.
    bound_transport(app, socketio, settings.relay_max_message_bytes, settings.relay_max_connections)
    identities: dict[str, Identity] = {}
    sessions = database_sessions(settings, database_url, "smartroute-relay", keep_all=True)
    actions = DriverActions(settings, sessions, create_celery(settings), cache)
    positions = PositionFeed(
        sessions,
        GreatCircleEta(speed_kmh=settings.speed_kmh, road_factor=settings.road_factor),
        manager.emit_each,
        every_s=settings.rider_position_every_s,
    )
    locations = Locations(
        PingWriter(cache),
        sessions,
        settings.relay_location_tick_s,
        settings.location_flush_s,
        on_flush=positions.after_flush,
    )

    @socketio.on("connect")
    def connect(auth):
        token = auth.get("token") if isinstance(auth, dict) else None
        identity = identify(secret_key, sessions, token)
        if identity is None:
            raise ConnectionRefusedError("unauthorized: a valid token is required in auth")
        last = auth.get("last_event_id")
        if last is not None and not valid_event_id(last):
            # Refused before anything is registered for the connection, so nothing is
            # left behind; the error event reaches clients that read events before the
            # connection is accepted, the refusal's data reaches every client.
            error = {
                "code": "invalid_field",
                "field": "last_event_id",
                "message": f"last_event_id must be a whole number from 0 to {MAX_EVENT_ID}",
            }
            emit("error", error, to=_sid(), ignore_queue=True)
            raise socketio_lib.exceptions.ConnectionRefusedError(error["message"], error)
        rooms = rooms_for(identity.user_id, identity.role)
        for room in rooms:
            join_room(room)
        if last is not None:
            # The rooms are joined first: an event published meanwhile arrives live, or in
            # the replay, or both (clients drop copies by event_id), never in neither.
            replay(last, rooms)
        identities[_sid()] = identity
        RELAY_CONNECTIONS.labels(identity.role).inc()

    def replay(last: int, rooms: list[str]) -> None:
        try:
            backlog = catch_up(cache, rooms, last)
        except (redis.RedisError, OSError) as exc:
            log.warning("replay skipped: %s", exc.__class__.__name__)
            backlog = Resync("replay_unavailable", None)
        # Emitted to this connection, which is on this relay: with ignore_queue, straight to
        # it, not published on Redis for every relay to read (a burst of reconnecting
        # drivers would be a burst of publishes).
        if isinstance(backlog, Resync):
            # A partial replay would look complete; the client reloads its state instead.
            emit(
                "resync_required",
                {"reason": backlog.reason, "oldest_event_id": backlog.oldest_event_id},
                to=_sid(),
                ignore_queue=True,
            )
            RELAY_RESYNCS.labels(backlog.reason).inc()
            return
        for _event_id, event, data in backlog:
            emit(event, data, to=_sid(), ignore_queue=True)
        RELAY_REPLAYED.inc(len(backlog))

    @socketio.on("disconnect")
    def disconnect(*_args):
        identity = identities.pop(_sid(), None)
        if identity is not None:
            RELAY_CONNECTIONS.labels(identity.role).dec()

    @socketio.on("join_driver_room")
    def join_driver(data=None):
        identity = identities[_sid()]
        user_id, role = identity.user_id, identity.role
        wanted = data.get("driver_id") if isinstance(data, dict) else None
        if role != "driver" or wanted != user_id:
            emit("error", {"code": "forbidden", "message": "a driver may join only its own room"})
            return
        join_room(driver_room(user_id))

    @socketio.on("join_admin_room")
    def join_admin(_data=None):
        if identities[_sid()].role != "admin":
            emit("error", {"code": "forbidden", "message": "only admins join the admin room"})
            return
        join_room(ADMIN_ROOM)

    def driver_action(sid, data=None, *_more):
        """Acknowledged with what ``POST /v1/bookings/<id>/<action>`` would answer, or 429
        while this connection's previous action is still running."""
        answer, ended = actions.handle_on(sid, identities[sid], data)
        if ended:
            # Once the answer has gone out (python-socketio queues it when this returns,
            # and the connection's close sends what is queued first): hung up at once, the
            # driver would wait out its acknowledgement timeout without learning why.
            socketio.start_background_task(socketio.server.disconnect, sid, namespace="/")
        return answer

    def location(sid, data=None, *_more):
        """A driver's location ping: buffered for the tick (web.relay_locations). Bad input
        is answered with an ``error`` event naming the field; the connection stays."""
        answer, error = locations.receive(identities.get(sid), data)
        if error is not None:
            # To this connection, which is on this relay: not through Redis.
            socketio.server.emit("error", error.event(), to=sid, namespace="/", ignore_queue=True)
        return answer

    # Straight on python-socketio's server, not through Flask-SocketIO's decorator: that
    # builds a Flask request and app context for every event, which cost more than a ping's
    # own work and a fifth of a driver action's. The handlers take the session id as an
    # argument instead of from the request.
    socketio.server.on("location", location, namespace="/")
    socketio.server.on("driver_action", driver_action, namespace="/")
    handle_inline(socketio.server, "location")
    locations.run(socketio.sleep, socketio.start_background_task)
    app.extensions["relay_locations"] = locations  # Written out as the relay stops.

    def revalidate_forever():
        while True:
            socketio.sleep(settings.relay_revalidate_every_s)
            try:
                for sid in ended_sessions(sessions, identities):
                    socketio.server.disconnect(sid, namespace="/")
            except SQLAlchemyError as exc:
                # Without the database nobody can connect either; the connections stand
                # until it answers again rather than all reconnecting into refusals.
                log.warning("token revalidation skipped: %s", exc.__class__.__name__)
            except Exception:
                # This loop is what ends revoked tokens' connections: it must outlive a bug.
                log.exception("token revalidation failed")

    socketio.start_background_task(revalidate_forever)

    # Once a closed connection's ping task has slept out its interval, all of it is free.
    memory = MemoryReturn(
        lambda: len(socketio.server.eio.sockets),
        settle_s=PING_INTERVAL_S + 5,
        release=drop_cancelled_timers if settings.relay_async_mode == "eventlet" else None,
    )

    def return_memory_forever():
        while True:
            socketio.sleep(MEMORY_CHECK_EVERY_S)
            memory.check()

    socketio.start_background_task(return_memory_forever)

    @app.get("/health")
    def health():
        try:
            cache.ping()
        except (redis.RedisError, OSError) as exc:
            return {
                "status": "degraded",
                "redis": {"status": "down", "error": exc.__class__.__name__},
            }, 503
        return {"status": "ok", "redis": {"status": "ok"}}

    @app.get("/metrics")
    def metrics():
        # The same token as the API's /metrics; with none configured nobody may scrape.
        if not scrape_allowed(settings.metrics_token, request.headers.get("Authorization")):
            return (
                {
                    "error": {
                        "code": "unauthorized",
                        "message": "/metrics needs Authorization: Bearer "
                        "<SMARTROUTE_METRICS_TOKEN>",
                    }
                },
                401,
                {"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        return Response(exposition(), mimetype=CONTENT_TYPE_LATEST)

    return app, socketio


def ended_sessions(sessions: sessionmaker[Session], identities: dict[str, Identity]) -> list[str]:
    """Connections whose token has expired or been revoked since they connected: one query
    for every connection of this relay, so Redis being down changes nothing."""
    now = dt.datetime.now(dt.UTC)
    current = list(identities.items())
    if not current:
        return []
    with sessions() as session:
        ended = tokens.ended_token_ids(session, {i.token_id for _, i in current})
    return [sid for sid, identity in current if identity.token_id in ended or identity.expired(now)]


def main() -> None:
    parser = argparse.ArgumentParser(description="SmartRoute's Socket.IO relay")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    settings = Settings.from_env()
    configure_logging(settings)
    if None in (settings.database_url, settings.redis_url, settings.secret_key):
        raise SystemExit(
            "the relay needs DATABASE_URL, REDIS_URL and SMARTROUTE_SECRET_KEY "
            "(smartroute relay fills them in)"
        )
    allow_open_files(settings.relay_max_connections + SERVER_ROOM + OTHER_FILES)
    gc.set_threshold(*GC_THRESHOLDS)
    app, socketio = create_relay(settings)
    log.info("relay listening on %s:%s (%s)", args.host, args.port, settings.relay_async_mode)
    # Stops gracefully on SIGTERM; never serves Werkzeug's interactive debugger.
    relay_shutdown.serve(
        app,
        socketio,
        args.host,
        args.port,
        on_stop=app.extensions["relay_locations"].close,
        **server_options(settings),
    )


# CPython's garbage collector, tuned for a process holding thousands of connections of
# about 160 tracked objects each. With the defaults (700, 10, 10) a relay holding 4,000
# pinging drivers ran a full collection of some 800,000 objects every seven seconds or so,
# half a second each with everything stalled: 28 % of its CPU, and the saw-tooth in
# ping-to-index latency. Collecting the youngest generation every 50,000 allocations
# instead of 700 lets the objects of an event die young rather than be promoted, and full
# collections become rare (none in that run); the relay still collects in full when
# drivers leave (web/relay_memory.py).
GC_THRESHOLDS = (50_000, 20, 10)


# Requests eventlet's server takes beyond the relay's connection cap: health checks,
# scrapes and the 503s of a full relay.
SERVER_ROOM = 64


# Files the relay holds besides its clients' sockets: database and Redis connections, logs.
OTHER_FILES = 256


def allow_open_files(needed: int) -> int:
    """Raise this process's soft limit on open files towards ``needed`` (as far as the hard
    limit allows), so the connection cap, not the limit, says how many clients it holds: a
    soft limit of 1024 is common, and past it every accept fails. The limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if wanted < needed:
        log.warning(
            "open files limited to %s (hard limit): fewer than the %s connections "
            "SMARTROUTE_RELAY_MAX_CONNECTIONS allows will fit",
            wanted,
            needed - SERVER_ROOM - OTHER_FILES,
        )
    return wanted


def server_options(settings: Settings) -> dict:
    """What the async mode's web server is told beyond host and port."""
    if settings.relay_async_mode == "eventlet":
        # eventlet.wsgi.server serves at most ``max_size`` connections at once (1024 unless
        # told); the ones past it wait, unanswered, in the listen backlog. The relay's own
        # cap (web.relay_transport.ConnectionCap) comes first, answering 503, and the room
        # above it keeps /health and those answers going when the relay is full.
        return {"max_size": settings.relay_max_connections + SERVER_ROOM}
    if settings.relay_async_mode == "threading":
        # Flask-SocketIO runs the threading mode on Werkzeug's threaded server (a thread a
        # connection, capped only by ConnectionCap), and refuses to unless told this is meant.
        return {"allow_unsafe_werkzeug": True}
    return {}
