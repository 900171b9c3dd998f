"""Giving memory back to the system when drivers leave the relay.

CPython frees a connection's objects into its allocator and glibc's heap, which keep the
pages: a relay that held ten thousand drivers keeps their memory after they leave, and a
node sized for its peak stays at its peak. Once the number of connections has fallen well
below the peak since the last return, and a closed connection's last task (engine.io's
ping task, which sleeps out its interval) has ended, the relay collects garbage and asks
glibc to hand every free page back (``malloc_trim``). Elsewhere (musl, macOS) it only
collects.

On eventlet, the hub's cancelled timers are dropped first (``drop_cancelled_timers``): a
few thousand of them, each a few small blocks from the peak, pin pages across the heap
that would otherwise go back.
"""

from __future__ import annotations

import ctypes
import gc
import heapq
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("smartroute.relay")

# A return follows a fall below this share of the peak connections...
FALL = 0.8
# ...of at least this many connections (a few drivers coming and going change nothing).
AT_LEAST = 200


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, looked up among the symbols the process already has."""
    return getattr(ctypes.CDLL(None), "malloc_trim", None)


def drop_cancelled_timers(hub: Any = None) -> int:
    """Take the cancelled timers out of eventlet's hub (this thread's unless ``hub`` is
    given); how many there were.

    Every green socket read arms a timeout (the relay's: its ping interval and timeout,
    85 s) and cancels it when data comes. The hub keeps a cancelled timer in its heap until
    it would have fired, and prunes them only when, at a cancel, they are half of more than
    a thousand timers. So once ten thousand drivers have left, thousands of cancelled
    timers linger for up to 85 s, and the pages holding them cannot go back: after 10,000
    drivers left a relay that started at 164 MB, it kept 245 MB through a trim; with them
    dropped first, 175 MB. This is the hub's own prune (``BaseHub.timer_canceled``), done
    when the relay is about to give memory back, on the lists in place, so that a
    ``fire_timers`` paused in the hub's greenlet goes on with the pruned heap.
    """
    if hub is None:
        from eventlet import hubs

        hub = hubs.get_hub()
    before = len(hub.timers) + len(hub.next_timers)
    hub.timers[:] = [t for t in hub.timers if not t[1].called]
    heapq.heapify(hub.timers)
    hub.next_timers[:] = [t for t in hub.next_timers if not t[1].called]
    hub.timers_canceled = 0
    return before - len(hub.timers) - len(hub.next_timers)


class MemoryReturn:
    """Watches the connection count (``check`` now and then) and gives memory back once
    ``settle_s`` after it fell well below its peak, calling ``release`` first (what frees
    the server's own leftovers: ``drop_cancelled_timers`` on eventlet)."""

    def __init__(
        self,
        connections: Callable[[], int],
        settle_s: float,
        clock: Callable[[], float] = time.monotonic,
        release: Callable[[], object] | None = None,
    ) -> None:
        self.connections, self.settle_s, self.clock = connections, settle_s, clock
        self.release = release
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
        if self.release is not None:
            self.release()
        gc.collect()
        if self._trim is not None:
            self._trim(0)
        log.info("gave memory back after connections fell from %s to %s", self.peak, count)
        self.peak, self.fell_at = count, None
        return True
