"""An idle WebSocket connection that costs the relay one green thread, not three.

Under eventlet, Engine.IO gives every WebSocket connection three green threads for its
whole life: the server's, which reads the client's messages; a writer, which waits on the
connection's queue for packets to send; and a ping task, which sleeps out the ping
interval (25 s), sends a PING, and is started again when the PONG arrives. A parked green
thread costs about 10 KB (its saved C stack, its frames' own 16 KB stack chunk, the
timer and event it waits on), so on a relay holding a city of idle drivers those two
sleepers were a third of each driver's memory.

``LeanSocket`` keeps the reader and drops the other two:

- **Pings** are hub timers: when the interval is up, a short-lived green thread sends the
  PING (a timer's callback runs on the hub, which must never block or run the
  application's disconnect handler).
- **Writes** start a writer only when there is something to send: it drains the queue, in
  order, and ends. A slow client still blocks only its own writer, never the caller of
  ``send`` (a push to a room, a reply to another driver).

Everything else (the long-polling transport, upgrades, closing, ping timeouts) is
Engine.IO's own. Only an Engine.IO server marked by ``use_lean_sockets`` gets this; the
code it replaces is Engine.IO 4's ``Socket.schedule_ping`` / ``_websocket_handler``.
"""

from __future__ import annotations

import contextlib
import functools
import time
from typing import Any

import engineio.server
import engineio.socket
from engineio import exceptions, packet

_MARK = "smartroute_lean_sockets"


def use_lean_sockets(eio: engineio.Server) -> None:
    """Give this eventlet Engine.IO server's new connections ``LeanSocket``'s behaviour."""
    if eio.async_mode != "eventlet":
        raise RuntimeError("lean sockets need the eventlet async mode")
    setattr(eio, _MARK, True)
    _install()


@functools.cache
def _install() -> None:
    # Engine.IO makes a connection's socket as ``socket.Socket(server, sid)`` (engineio.server
    # imports the module, not the class), so the class is swapped where it looks it up.
    # Servers without the mark get Engine.IO's behaviour unchanged.
    engineio.socket.Socket = LeanSocket
    assert engineio.server.socket.Socket is LeanSocket


class LeanSocket(engineio.socket.Socket):
    """Engine.IO's socket, with timer pings and a writer only while there is a backlog."""

    last_ping: float | None
    connected: bool
    _ws: Any = None  # the WebSocket, once this connection has upgraded to one
    _writing = False

    @property
    def _lean(self) -> bool:
        return getattr(self.server, _MARK, False)

    def schedule_ping(self) -> None:
        if not self._lean:
            return super().schedule_ping()
        # As Engine.IO's: only once the previous ping has been answered.
        if self.last_ping:
            self.last_ping = None
            import eventlet

            eventlet.hubs.get_hub().schedule_call_global(
                self.server.ping_interval, eventlet.spawn_n, self._ping
            )

    def _ping(self) -> None:
        if not self.closing and not self.closed:
            self.last_ping = time.time()
            self.send(packet.Packet(packet.PING))

    def send(self, pkt: packet.Packet) -> None:
        super().send(pkt)
        if self._ws is not None:
            self._start_writing()

    def _start_writing(self) -> None:
        if not self._writing:
            import eventlet

            self._writing = True
            eventlet.spawn_n(self._write)

    def _write(self) -> None:
        """Send what is queued, in order, then end. ``None`` in the queue ends the
        connection; so does a send that fails, which also ends its reader (as with
        Engine.IO's writer)."""
        empty = self.server.get_queue_empty_exception()
        try:
            while self._ws is not None:
                try:
                    pkt = self.queue.get(block=False)
                except empty:
                    return
                self.queue.task_done()
                if pkt is None:
                    self._hang_up()
                    return
                try:
                    self._ws.send(pkt.encode())
                except Exception:
                    self._hang_up()
                    return
        finally:
            self._writing = False

    def _hang_up(self) -> None:
        """Close the WebSocket and forget what was still to be sent on it."""
        ws, self._ws = self._ws, None
        with contextlib.suppress(OSError):  # already gone
            ws.close()
        self._drop_queue()

    def _drop_queue(self) -> None:
        empty = self.server.get_queue_empty_exception()
        while True:
            try:
                self.queue.get(block=False)
            except empty:
                return
            self.queue.task_done()

    def _websocket_handler(self, ws: Any) -> list:
        if not self._lean:
            return super()._websocket_handler(ws)
        # Engine.IO's handler for a connection that opened on the WebSocket, with its writer
        # task replaced; one that upgrades from long-polling keeps Engine.IO's own.
        if self.connected:
            return super()._websocket_handler(ws)
        limit = self.server.max_http_buffer_size
        # A client silent past a ping's interval and timeout is gone; the read says so.
        ws.socket.settimeout(self.server.ping_interval + self.server.ping_timeout)
        self.connected = self.upgraded = True
        self._ws = ws
        self._start_writing()  # the OPEN and CONNECT replies already queued
        while True:
            try:
                data = ws.wait()
                if data and len(data) > limit:
                    raise ValueError("packet is too large")
            except Exception as exc:
                if not self.closed:
                    self.server.logger.info(
                        '%s: Unexpected error "%s", closing connection', self.sid, exc
                    )
                break
            if data is None:  # the client closed the connection
                break
            try:
                self.receive(packet.Packet(encoded_packet=data))
            except exceptions.UnknownPacketError:
                pass
            except exceptions.SocketIsClosedError:
                self.server.logger.info("Receive error -- socket is closed")
                break
            except Exception:
                self.server.logger.exception("Unknown receive error")
                break
        self.queue.put(None)
        if self._ws is not None:
            self._start_writing()
            self.queue.join()  # the writer has sent what was queued and closed the WebSocket
        else:
            self._drop_queue()  # a failed send closed it already
        self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)
        return []
