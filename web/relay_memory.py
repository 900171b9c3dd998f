"""Giving memory back to the system when drivers leave the relay.

CPython frees a connection's objects into its allocator and glibc's heap, which keep the
pages: a relay that held ten thousand drivers keeps their memory after they leave, and a
node sized for its peak stays at its peak. Once the number of connections has fallen well
below the peak since the last return, and a closed connection's last task (engine.io's
ping task, which sleeps out its interval) has ended, the relay collects garbage and asks
glibc to hand every free page back (``malloc_trim``). Elsewhere (musl, macOS) it only
collects.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger("smartroute.relay")

# A return follows a fall below this share of the peak connections...
FALL = 0.8
# ...of at least this many connections (a few drivers coming and going change nothing).
AT_LEAST = 200


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, looked up among the symbols the process already has."""
    return getattr(ctypes.CDLL(None), "malloc_trim", None)


class MemoryReturn:
    """Watches the connection count (``check`` now and then) and gives memory back once
    ``settle_s`` after it fell well below its peak."""

    def __init__(
        self,
        connections: Callable[[], int],
        settle_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.connections, self.settle_s, self.clock = connections, settle_s, clock
        self.peak = 0
        self.fell_at: float | None = None
        self._trim = _malloc_trim()

    def check(self) -> bool:
        """Whether memory was given back this time."""
        count, now = self.connections(), self.clock()
        if count > self.peak:
            self.peak, self.fell_at = count, None
            return False
        if self.peak - count < max(AT_LEAST, (1 - FALL) * self.peak):
            return False
        if self.fell_at is None:
            self.fell_at = now
            return False
        if now - self.fell_at < self.settle_s:
            return False
        gc.collect()
        if self._trim is not None:
            self._trim(0)
        log.info("gave memory back after connections fell from %s to %s", self.peak, count)
        self.peak, self.fell_at = count, None
        return True
