"""An idle WebSocket costs the relay one green thread, and still gets its pings, its
packets in order, and a clean end (web.relay_sockets).

A small eventlet Socket.IO server with the relay's lean sockets runs in a process of its
own (eventlet must patch a process before anything else runs), with a one-second ping
interval; raw WebSocket clients read its frames as they come.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests

from tests.support import wait_for

ROOT = Path(__file__).resolve().parents[2]

SERVER = textwrap.dedent(
    """
    import eventlet
    eventlet.monkey_patch()
    import gc, json, sys
    import eventlet.wsgi, greenlet, socketio
    from web.relay_sockets import use_lean_sockets

    sio = socketio.Server(async_mode="eventlet", ping_interval=1, ping_timeout=30)
    use_lean_sockets(sio.eio)

    @sio.on("burst")
    def burst(sid, count):
        for i in range(count):
            sio.emit("n", i, to=sid)

    @sio.on("flood")
    def flood(sid, target):
        # 8 MB to a client that may not be reading, then a word to the sender.
        for i in range(1000):
            sio.emit("bulk", "x" * 8000, to=target)
        sio.emit("flooded", target, to=sid)

    @sio.on("kick")
    def kick(sid):
        # The whole connection, as a relay ends a revoked token's (Socket.IO's disconnect
        # leaves the connection for the client to close).
        sio.eio.disconnect(sio.manager.eio_sid_from_sid(sid, "/"))

    sio_app = socketio.WSGIApp(sio)

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/state":
            live = sum(
                1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet) and not o.dead
            )
            body = json.dumps({"greenlets": live, "sockets": len(sio.eio.sockets)}).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        return sio_app(environ, start_response)

    listener = eventlet.listen(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    eventlet.wsgi.server(listener, app, log_output=False)
    """
)


@pytest.fixture
def server(tmp_path):
    script = tmp_path / "lean_server.py"
    script.write_text(SERVER)
    process = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()


class Client:
    """A WebSocket client speaking Engine.IO 4 by hand, reading short frames."""

    def __init__(self, port: int, receive_buffer: int | None = None) -> None:
        self.sock = socket.socket()
        self.sock.settimeout(10)
        if receive_buffer:  # set before connecting: the kernel then leaves it as it is
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(
            b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        assert self.read().startswith(b"0{")  # OPEN
        self.send(b"40")
        accepted = self.read()
        assert accepted.startswith(b"40{")  # CONNECT accepted
        self.sid = json.loads(accepted[2:])["sid"]

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("the server hung up")
        return chunk

    def read(self) -> bytes:
        """The next frame's payload (the server sends short, unmasked text frames)."""
        while len(self.buffer) < 2:
            self.buffer += self._recv()
        self.opcode = self.buffer[0] & 0x0F  # 1 text, 8 close
        length, start = self.buffer[1] & 127, 2
        if length == 126:
            while len(self.buffer) < 4:
                self.buffer += self._recv()
            length, start = int.from_bytes(self.buffer[2:4], "big"), 4
        while len(self.buffer) < start + length:
            self.buffer += self._recv()
        payload, self.buffer = self.buffer[start : start + length], self.buffer[start + length :]
        return payload

    def send(self, payload: bytes) -> None:
        # A client's frames are masked; a zero mask leaves the payload as it is.
        self.sock.sendall(bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)

    def close(self) -> None:
        self.sock.close()


def state(port: int) -> dict:
    return requests.get(f"http://127.0.0.1:{port}/state", timeout=10).json()


def test_an_idle_connection_holds_one_green_thread(server):
    before = state(server)["greenlets"]
    clients = [Client(server) for _ in range(30)]
    try:
        held = state(server)
        assert held["sockets"] == 30
        # Engine.IO's own sockets hold three each: reader, writer and ping task.
        assert held["greenlets"] - before <= 30 + 2, held
    finally:
        for client in clients:
            client.close()
    wait_for(lambda: state(server)["sockets"] == 0, 20, "the server to let the sockets go")
    after = state(server)
    assert after["sockets"] == 0
    assert after["greenlets"] <= before + 1, after


def test_pings_keep_coming_while_the_client_answers(server):
    client = Client(server)
    try:
        for _ in range(3):
            assert client.read() == b"2"  # PING, one interval after the last PONG
            client.send(b"3")
    finally:
        client.close()


def test_packets_go_out_in_the_order_they_were_sent(server):
    client = Client(server)
    try:
        client.send(b'42["burst",300]')
        received = []
        while len(received) < 300:
            frame = client.read()
            if frame == b"2":
                client.send(b"3")
                continue
            assert frame.startswith(b"42"), frame
            received.append(json.loads(frame[2:])[1])
        assert received == list(range(300))
    finally:
        client.close()


def test_a_client_that_stops_reading_holds_up_nobody_else(server):
    stalled, sender = Client(server, receive_buffer=4096), Client(server)
    try:
        # The server sends more than the connection's buffers hold (the server's send buffer
        # grows to 4 MB at most) to a client that never reads; the handler sending it must
        # not wait for that client.
        # Were it to wait, it would until the stalled send timed out, 30 s on.
        sent = time.monotonic()
        sender.send(b'42["flood","' + stalled.sid.encode() + b'"]')
        frame = sender.read()
        while frame == b"2":  # pings keep coming meanwhile
            assert time.monotonic() - sent < 10, "the handler waited for the stalled client"
            sender.send(b"3")
            frame = sender.read()
        assert json.loads(frame[2:]) == ["flooded", stalled.sid]
    finally:
        stalled.close()
        sender.close()
    wait_for(lambda: state(server)["sockets"] == 0, 20, "the server to let the sockets go")
    assert state(server)["sockets"] == 0


def test_the_server_ending_a_connection_tells_the_client_and_closes_it(server):
    client = Client(server)
    try:
        client.send(b'42["kick"]')
        with pytest.raises(ConnectionResetError):
            while True:
                client.read()
        assert client.opcode == 8  # the WebSocket's close frame, then the connection closed
    finally:
        client.close()
    wait_for(lambda: state(server)["sockets"] == 0, 20, "the server to let the sockets go")
    assert state(server)["sockets"] == 0
