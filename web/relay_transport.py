"""The relay's transport with a whole-message limit, enforced while a message is read.

Engine.IO compares ``max_http_buffer_size`` (``SMARTROUTE_RELAY_MAX_MESSAGE_BYTES``) with a
WebSocket message only once the message is whole, and hands it to the async mode's WebSocket
reader to assemble. Neither reader bounds that assembly by itself:

- eventlet's ``RFC6455WebSocket`` checks each frame against the limit but joins continuation
  frames with no total, so a client that never finishes a message grows the relay without end
  (and its pre-RFC "hixie-76" reader buffers until it sees a 0xFF byte).
- simple-websocket (the threading mode's reader) bounds a whole message by its
  ``max_message_size``, but Engine.IO builds it with no arguments, so it has no limit either.

Both happen before Socket.IO sees a packet, so before any token is looked at. ``bound_transport``
gives Engine.IO a reader that counts a message's bytes as its frames arrive and closes the
connection with 1009 ("message too big") as soon as a frame would take the message past the
limit, before reading that frame's payload; it also answers 413 to a long-polling POST whose
body is over the limit, before the body is read.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask
from flask_socketio import SocketIO

from web.relay_sockets import use_lean_sockets

# RFC 6455: a control frame (close, ping, pong) carries at most 125 bytes, and may arrive
# between the fragments of a message.
CONTROL_FRAME_MAX = 125
TOO_BIG = 1009


def bound_transport(
    app: Flask, socketio: SocketIO, max_message_bytes: int, max_connections: int
) -> None:
    """Make ``socketio``'s Engine.IO server read no message, on any transport, beyond
    ``max_message_bytes``, and serve at most ``max_connections`` Socket.IO requests (each
    WebSocket is one for its whole life) at once."""
    eio = socketio.server.eio
    if eio.async_mode == "eventlet":
        websocket = _eventlet_websocket()
        use_lean_sockets(eio)
    elif eio.async_mode == "threading":
        websocket = _simple_websocket()
    else:
        # Another mode would bring its own reader, which nobody has checked for this limit.
        raise RuntimeError(
            f"the relay has no bounded WebSocket reader for async mode "
            f"{eio.async_mode!r}; use eventlet or threading"
        )
    # A copy: the dictionary Engine.IO holds is its driver module's own.
    eio._async = {**eio._async, "websocket": websocket}
    eio.max_http_buffer_size = max_message_bytes
    # Flask's documented way to wrap its WSGI app in middleware; its stubs call it a method.
    app.wsgi_app = ConnectionCap(  # type: ignore[method-assign]
        BodyLimit(app.wsgi_app, max_message_bytes), max_connections
    )


class ConnectionCap:
    """WSGI middleware: past ``limit`` Socket.IO requests at once, the next is answered 503.

    The threading mode's server has no cap of its own (a thread per connection), and
    eventlet's makes the connection past its cap wait unanswered, /health included; the
    relay gives eventlet's server some room above this cap (web.relay.server_options), so a
    full relay says so and still answers its health check.
    """

    def __init__(self, app: Callable, limit: int, prefix: str = "/socket.io") -> None:
        self.app, self.limit, self.prefix = app, limit, prefix
        self.open = 0
        self._guard = threading.Lock()

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if not environ.get("PATH_INFO", "").startswith(self.prefix):
            return self.app(environ, start_response)
        with self._guard:
            full = self.open >= self.limit
            if not full:
                self.open += 1
        if full:
            body = (
                b'{"error": {"code": "relay_full", "message": "this relay holds all the '
                b'connections it may; try again shortly"}}'
            )
            start_response(
                "503 Service Unavailable",
                [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(body))),
                    ("Retry-After", "5"),
                    ("Connection", "close"),
                ],
            )
            return [body]
        try:
            # A WebSocket's whole life is inside this call, in both modes.
            return self.app(environ, start_response)
        finally:
            with self._guard:
                self.open -= 1


class BodyLimit:
    """WSGI middleware: a request body over the limit is refused (413) before it is read.

    Engine.IO checks a long-polling POST's Content-Length too; this also refuses chunked
    bodies, whose size nobody knows until they have been read, on every path of the relay.
    """

    def __init__(self, app: Callable, limit: int) -> None:
        self.app, self.limit = app, limit

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = self.limit + 1
        if chunked or length > self.limit:
            body = (
                b'{"error": {"code": "payload_too_large", "message": "a request body may '
                b'hold at most %d bytes, with a Content-Length"}}' % self.limit
            )
            start_response(
                "413 Request Entity Too Large",
                [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(body))),
                    ("Connection", "close"),
                ],
            )
            return [body]
        return self.app(environ, start_response)


# The read and write buffers eventlet's server gives each connection (8 KB and 16 KB unless
# told). A WebSocket reads and writes its socket directly once upgraded, so for its whole
# life they only hold memory: about 24 KB of each idle driver's cost, out of some 70.
# Reading a request's head, or a body, in smaller pieces costs a few more reads; a write
# bigger than the buffer goes straight to the socket.
HTTP_BUFFER_BYTES = 1024


@functools.cache
def eventlet_http_protocol() -> type:
    """eventlet's HTTP protocol with small per-connection buffers (``HTTP_BUFFER_BYTES``)."""
    import eventlet.wsgi

    class SmallBufferedHttpProtocol(eventlet.wsgi.HttpProtocol):
        rbufsize = HTTP_BUFFER_BYTES
        wbufsize = HTTP_BUFFER_BYTES

    return SmallBufferedHttpProtocol


# How much a WebSocket reader asks the kernel for at once (``ReadAhead``): a location ping's
# frame is about 120 bytes, so one read usually holds a whole frame, or several.
READ_AHEAD_BYTES = 4096


class ReadAhead:
    """A socket whose reads take what has arrived, up to ``READ_AHEAD_BYTES``, and hand it out
    in the sizes asked for.

    Eventlet's WebSocket reader asks for each part of a frame (header, length, mask,
    payload) with a read of its own: for a location ping, three or four system calls, each
    through the green socket's retry loop. Reading ahead makes that one. What is kept is
    bounded by ``READ_AHEAD_BYTES``, whatever a frame announces. Everything but ``recv`` is
    the wrapped socket's.
    """

    __slots__ = ("_sock", "_unread")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._unread = b""

    def recv(self, size: int) -> bytes:
        if not self._unread:
            return self._take(self._sock.recv(max(size, READ_AHEAD_BYTES)), size)
        return self._take(self._unread, size)

    def _take(self, data: bytes, size: int) -> bytes:
        self._unread = data[size:]
        return data[:size]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


@functools.cache
def _eventlet_websocket() -> type:
    # Imported here, not at the top: importing eventlet outside an eventlet relay warns that
    # eventlet is deprecated, and the threading mode has no use for it.
    from engineio.async_drivers.eventlet import WebSocketWSGI
    from eventlet.websocket import FailedConnectionError, RFC6455WebSocket

    class BoundedMessage(RFC6455WebSocket.Message):
        """A message that refuses to hold more than the limit it was made with.

        Eventlet makes a message with the reader's ``max_frame_length`` at its first frame,
        which ``BoundedWebSocket`` sets to the whole message's limit then.
        """

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.size = 0

        def push(self, data: bytes, final: bool = False) -> None:
            self.size += len(data)
            if self.size > self.max_frame_length:
                raise FailedConnectionError(TOO_BIG, "message too big")
            super().push(data, final)

    class BoundedWebSocket(RFC6455WebSocket):
        """eventlet's RFC 6455 reader, with a limit on the whole message.

        Eventlet reads a frame's header, refuses the frame (1009) if its length is over
        ``max_frame_length``, and only then reads its payload. Setting ``max_frame_length``
        before each frame to what the message may still grow by turns that per-frame check
        into a whole-message one, made before anything is buffered.
        """

        Message = BoundedMessage
        message_limit: int

        @staticmethod
        def _apply_mask(
            data: bytes, mask: tuple[int, ...], length: int | None = None, offset: int = 0
        ) -> bytes:
            # Eventlet unmasks a byte at a time in Python, about a second of CPU per MB: a
            # client sending within the limit could still keep the relay's one thread busy.
            # The same XOR, done on whole integers.
            if length is None:
                length = len(data)
            key = bytes(mask[(offset + i) % 4] for i in range(4))
            stream = (key * (length // 4 + 1))[:length]
            return (int.from_bytes(data[:length], "big") ^ int.from_bytes(stream, "big")).to_bytes(
                length, "big"
            )

        def _recv_frame(self, message=None):
            spent = message.size if message is not None else 0
            # A ping between fragments must still pass; BoundedMessage.push catches a data
            # frame that this floor would let past the limit.
            self.max_frame_length = max(self.message_limit - spent, CONTROL_FRAME_MAX)
            return super()._recv_frame(message)

    class BoundedWebSocketWSGI(WebSocketWSGI):
        """Engine.IO's eventlet WebSocket handler, making ``BoundedWebSocket`` readers."""

        reader = BoundedWebSocket

        def __init__(self, handler, server) -> None:
            super().__init__(handler, server)
            # hixie-76, which no current client speaks, buffers until it sees 0xFF.
            self.support_legacy_versions = False

        def _handle_hybi_request(self, environ):
            return self.take_over(super()._handle_hybi_request(environ), self.max_frame_length)

        @classmethod
        def take_over(cls, ws, message_limit: int):
            """Eventlet's reader ``ws``, made the relay's: bounded to ``message_limit`` and
            reading ahead.

            Eventlet builds its reader by name in the handshake; the subclass adds methods
            and nothing to the instance's layout, so the reader it made can take it on. Its
            frame iterator has not started yet, so every frame goes through it.
            """
            ws.__class__ = cls.reader
            ws.message_limit = message_limit
            ws.socket = ReadAhead(ws.socket)
            return ws

    return BoundedWebSocketWSGI


@functools.cache
def _simple_websocket() -> type:
    import simple_websocket
    from engineio.async_drivers._websocket_wsgi import SimpleWebSocketWSGI

    class WakingServer(simple_websocket.Server):
        """simple-websocket's server, waking its reader when the connection ends.

        Refusing a message that is too big, simple-websocket wakes the reader before it marks
        the connection closed; the reader can see it still open, wait again, and never be
        woken, holding its thread and socket for good. Waking it once more after the
        connection has ended lets it see the close.
        """

        def _thread(self) -> None:
            try:
                super()._thread()
            finally:
                self.connected = False
                self.event.set()

    class BoundedSimpleWebSocketWSGI(SimpleWebSocketWSGI):
        """Engine.IO's simple-websocket handler, given the limit it does not pass on.

        simple-websocket adds up a message's fragments as they arrive (wsproto hands them
        over as it reads, at most ``receive_bytes`` at a time) and closes with 1009 once the
        total passes ``max_message_size``, before appending the fragment.
        """

        def __init__(self, handler, server, **kwargs) -> None:
            super().__init__(
                handler, server, max_message_size=int(server.max_http_buffer_size), **kwargs
            )

        def __call__(self, environ, start_response):
            # As Engine.IO's, with the server above.
            self.ws = WakingServer(environ, **self.server_args)
            ret = self.app(self)
            if self.ws.mode == "gunicorn":
                raise StopIteration()
            if self.ws.mode == "werkzeug":
                raise ConnectionError()
            return ret

    return BoundedSimpleWebSocketWSGI
