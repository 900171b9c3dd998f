"""The eventlet relay's WebSocket reader unmasks frames exactly as eventlet does, only faster."""

import os
import random
import time
import warnings


def readers():
    # Importing eventlet outside an eventlet process warns that it is deprecated.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from eventlet.websocket import RFC6455WebSocket

    from web.relay_transport import _eventlet_websocket

    return _eventlet_websocket().reader, RFC6455WebSocket


def test_unmasking_matches_eventlets_for_every_offset_and_length():
    bounded, original = readers()
    rng = random.Random(7)
    for length in (0, 1, 3, 4, 5, 127, 4096, 65536):
        data = os.urandom(length + 3)
        mask = tuple(rng.randrange(256) for _ in range(4))
        for offset in range(5):
            assert bounded._apply_mask(data, mask, length, offset) == original._apply_mask(
                data, mask, length, offset
            )
        assert bounded._apply_mask(data[:length], mask) == original._apply_mask(data[:length], mask)


def test_unmasking_a_whole_message_takes_milliseconds_not_a_tenth_of_a_second():
    bounded, _original = readers()
    data = os.urandom(64 * 1024)
    started = time.perf_counter()
    bounded._apply_mask(data, (1, 2, 3, 4), len(data), 0)
    assert time.perf_counter() - started < 0.02


class ArrivingSocket:
    """A socket on which ``chunks`` arrive one after another; counts the reads asked of it."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.reads = 0

    def recv(self, size: int) -> bytes:
        self.reads += 1
        if not self.chunks:
            return b""
        chunk = self.chunks.pop(0)
        if len(chunk) > size:
            self.chunks.insert(0, chunk[size:])
        return chunk[:size]


def client_frame(text: str, rng: random.Random) -> bytes:
    """One masked text frame, as a browser or python-socketio client sends it."""
    payload = text.encode()
    mask = bytes(rng.randrange(256) for _ in range(4))
    if len(payload) < 126:
        header = bytes([0x81, 0x80 | len(payload)])
    else:
        header = bytes([0x81, 0x80 | 126]) + len(payload).to_bytes(2, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


def relay_reader(sock: ArrivingSocket):
    """The relay's reader on ``sock``, set up by the relay's handshake code."""
    from web.relay_transport import _eventlet_websocket

    _, original = readers()
    ws = original(sock, {}, protocol=None, extensions=None)
    return _eventlet_websocket().take_over(ws, 64 * 1024)


def test_frames_that_arrive_together_are_read_in_one_go_and_come_out_whole():
    rng = random.Random(3)
    pings = [
        f'42["location",{{"lat":38.7{i},"lng":-9.1{i},"at":"2026-12-01T16:00:0{i}Z"}}]'
        for i in range(3)
    ]
    sock = ArrivingSocket([b"".join(client_frame(p, rng) for p in pings)])
    ws = relay_reader(sock)
    assert [ws.wait() for _ in pings] == pings
    assert sock.reads == 1  # eventlet alone reads each frame's header, mask and payload apart
    assert ws.wait() is None  # the peer closed


def test_a_message_split_across_reads_and_frames_comes_out_whole():
    rng = random.Random(4)
    long_text = "x" * 40_000
    stream = client_frame(long_text, rng) + client_frame("after", rng)
    # Arriving in awkward pieces: mid-header, mid-mask, mid-payload.
    cuts = [1, 3, 7, 5000, 20_000, len(stream)]
    chunks = [stream[a:b] for a, b in zip([0, *cuts], cuts, strict=False)]
    ws = relay_reader(ArrivingSocket(chunks))
    assert ws.wait() == long_text
    assert ws.wait() == "after"
