"""How long a region's bookings wait to be matched together: the adaptive batch window.

Batching pays when bookings compete for the same drivers: solving them together gives
each a better driver than taking them one by one, and one batch costs less than many.
When bookings are sparse and drivers plentiful it buys nothing, and every rider waits
for it. So each region's window follows the pressure its last batch met:

- **Grow** (double, from ``floor_s`` up to ``max_s``) when the batch was crowded: as many
  bookings as ``pressed_ratio`` of the free drivers within reach, a claim lost to another
  batch, a batch cut at its size limit, or a batch that took longer to run than the window
  it waited (the workers are behind, and fewer, larger batches cost less).
- **Shrink** (halve, down to ``min_s``) when it was relaxed: no more bookings than
  ``relaxed_ratio`` of the free drivers, and nothing lost.
- Otherwise keep it: between the two ratios batching helps a little and costs little.

Doubling and halving settle within a few batches after a change in demand, and the gap
between the ratios keeps the window from flapping. ``min_s`` equal to ``max_s`` is a
fixed window.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Pressure:
    """What one batch met: its bookings, the free drivers within their reach, claims it
    lost, whether it hit its size limit, and how long it ran."""

    bookings: int
    free_drivers: int
    lost: int = 0
    full: bool = False
    run_s: float = 0.0


@dataclass(frozen=True)
class WindowPolicy:
    max_s: float = 1.0
    min_s: float = 0.02
    relaxed_ratio: float = 0.25
    pressed_ratio: float = 0.5

    @property
    def adaptive(self) -> bool:
        return self.min_s < self.max_s

    @property
    def floor_s(self) -> float:
        """Where growth starts from a window at or near zero: a tenth of the maximum."""
        return max(self.min_s, self.max_s / 10)

    def next_window_s(self, current_s: float, pressure: Pressure) -> float:
        """The window the region's next batch waits, after one that waited ``current_s``
        and met ``pressure``."""
        if not self.adaptive:
            return self.max_s
        if pressure.bookings == 0:
            return current_s
        ratio = pressure.bookings / max(1, pressure.free_drivers)
        crowded = (
            ratio >= self.pressed_ratio
            or pressure.lost > 0
            or pressure.full
            or pressure.run_s > max(current_s, self.floor_s)
        )
        if crowded:
            return min(self.max_s, max(self.floor_s, current_s * 2))
        if ratio <= self.relaxed_ratio:
            shrunk = current_s / 2
            return self.min_s if shrunk < self.floor_s else shrunk
        return current_s

    def clamp(self, window_s: float) -> float:
        return min(self.max_s, max(self.min_s, window_s))
