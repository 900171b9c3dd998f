"""The relay's graceful stop, as a rolling deploy needs it.

On SIGTERM the relay stops taking work: a new connection is refused (so the client goes to
another relay at once) and a new event is answered 503 ``relay_stopping`` (a driver's app
retries it elsewhere). The events already being handled finish and are acknowledged, so a
driver action already sent gets its answer rather than waiting out its timeout. Then every
connection is closed, each client reconnects to another relay with its last_event_id and
replays what it missed there, the relay writes what it still buffers (drivers' last
positions), and the process exits 0.

Without this, SIGTERM's default ends the process where it stands: sockets are cut, and a
driver mid-``driver_action`` waits for an answer that never comes (python-socketio's
``call`` keeps waiting for its timeout after the connection drops).
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable

from flask import Flask
from flask_socketio import SocketIO
from socketio.exceptions import ConnectionRefusedError

from web.errors import error_body
from web.relay_transport import eventlet_http_protocol

log = logging.getLogger("smartroute.relay")

# The longest the events being handled are waited for; a driver action's transaction is
# far shorter (PostgreSQL ends one idle in a transaction long before).
DRAIN_S = 10.0
# The longest closing every connection in order is waited for.
CLOSE_S = 2.0
# How often the stop is looked for. A signal handler cannot wake eventlet's hub (the
# interrupted poll is resumed with its old timeout), so a greenthread looks for the flag.
WATCH_EVERY_S = 0.1
# Connections the kernel queues while the relay is busy accepting (eventlet's default is
# 50: the rest of a burst of reconnecting drivers would wait out a SYN retry, a second or
# more). The kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG = 2048


class _Handlers:
    """Counts the Socket.IO event handlers running, and turns new work away once stopping."""

    def __init__(self) -> None:
        self.running = 0
        self.stopping = False

    def count(self, socketio: SocketIO) -> None:
        # python-socketio runs every handler (connect, driver_action, location, …, whether
        # registered through Flask-SocketIO or on the server itself) through this one
        # method, looked up on the instance at each event, so wrapping it sees them all.
        server = socketio.server
        trigger = server._trigger_event

        def counted(event, namespace, *args):
            if self.stopping and event == "connect":
                raise ConnectionRefusedError("relay_stopping: connect to another relay")
            if self.stopping and event != "disconnect":
                return {
                    "status": 503,
                    **error_body("relay_stopping", "this relay is stopping: try again elsewhere"),
                }
            self.running += 1
            try:
                return trigger(event, namespace, *args)
            finally:
                self.running -= 1

        server._trigger_event = counted


def serve(
    app: Flask,
    socketio: SocketIO,
    host: str,
    port: int,
    on_stop: Callable[[], None] = lambda: None,
    **server_options,
) -> None:
    """Serve until SIGTERM (or Ctrl-C), then stop gracefully (eventlet); other async modes
    are served by Flask-SocketIO as they were. ``on_stop`` runs once every connection is
    closed; ``server_options`` go to the web server (eventlet's ``max_size``, say)."""
    if socketio.server.eio.async_mode != "eventlet":
        socketio.run(
            app,
            host=host,
            port=port,
            log_output=False,
            debug=False,
            use_reloader=False,
            **server_options,
        )
        return
    import eventlet
    import eventlet.wsgi
    import greenlet

    listener = eventlet.listen((host, port), backlog=LISTEN_BACKLOG)
    handlers = _Handlers()
    handlers.count(socketio)
    stopping: list[int] = []  # The signals received; a plain list is safe in a handler.
    server_greenlet = greenlet.getcurrent()

    def stop_when_asked() -> None:
        while not stopping:
            eventlet.sleep(WATCH_EVERY_S)
        handlers.stopping = True
        log.info("stopping: turning new work away, finishing %s event(s)", handlers.running)
        deadline = time.monotonic() + DRAIN_S
        while handlers.running and time.monotonic() < deadline:
            eventlet.sleep(0.02)
        sockets = list(socketio.server.eio.sockets.values())
        log.info("closing %s connection(s)", len(sockets))
        # Closed in order: Engine.IO's close packet follows the acknowledgements already
        # queued, and each close waits for its queue to be written, all at once and for
        # CLOSE_S at most (a long-polling client that never polls again would be waited
        # for forever). Only then does the accept loop end (eventlet.wsgi.server takes
        # SystemExit as "stop"), which cuts whatever is still open; the listener goes with
        # the process.
        closing = eventlet.GreenPool()
        for socket in sockets:
            closing.spawn(socket.close)
        with eventlet.Timeout(CLOSE_S, False):
            closing.waitall()
        try:
            on_stop()
        except Exception:
            log.exception("stopping: writing what was buffered failed")
        eventlet.kill(server_greenlet, SystemExit)
        listener.close()

    def on_signal(signum, _frame) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    eventlet.spawn(stop_when_asked)
    eventlet.wsgi.server(
        listener, app, log_output=False, protocol=eventlet_http_protocol(), **server_options
    )
