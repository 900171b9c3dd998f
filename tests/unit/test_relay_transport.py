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
