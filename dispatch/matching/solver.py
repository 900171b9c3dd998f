"""Matching a batch of bookings to drivers at once, as an assignment problem.

Nearest-first hands each booking, in arrival order, the closest free driver; when
drivers are scarce that strands later riders with far drivers. Solving the whole
batch (scipy's ``linear_sum_assignment``, a Jonker–Volgenant solver) minimises the
batch's total pickup ETA instead. Each booking only considers its k nearest
drivers, which keeps the matrix sparse in meaning and the result within a hair
of the unrestricted optimum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from dispatch.eta import CostModel
from dispatch.matching.policy import Candidate

# Stands for "not a candidate": larger than any real batch total, so the solver uses such
# a pair only when nothing real is left, and those pairs are then dropped.
NOT_A_CANDIDATE = 1e9


@dataclass(frozen=True)
class Request:
    id: int
    lat: float
    lng: float


@dataclass(frozen=True)
class FreeDriver:
    id: int
    lat: float
    lng: float
    idle_s: float = 0.0
    # The driver's average rating from riders, None until rated (weighed only when asked).
    rating: float | None = None


@dataclass(frozen=True)
class Assignment:
    booking_id: int
    driver_id: int
    eta_s: float


@dataclass
class BatchResult:
    assignments: list[Assignment]
    # Each booking's candidates, nearest first: what the dispatch log explains.
    candidates: dict[int, list[Candidate]] = field(default_factory=dict)


class _Located(Protocol):
    @property
    def lat(self) -> float: ...
    @property
    def lng(self) -> float: ...


def _points(items: Sequence[_Located]) -> npt.NDArray[np.float64]:
    return np.array([[i.lat, i.lng] for i in items], dtype=float).reshape(-1, 2)


def _tie_break(drivers: list[FreeDriver]) -> npt.NDArray[np.float64]:
    """A sub-second nudge toward the longest-idle driver among near-equals."""
    idle = np.array([d.idle_s for d in drivers], dtype=float)
    nudge: npt.NDArray[np.float64] = -np.minimum(idle, 3600.0) / 3600.0 * 0.5
    return nudge


# An unrated driver is weighed as if rated this: neither the best nor held back for being new.
UNRATED_AS = 4.5


def _rating_penalty(drivers: list[FreeDriver], weight_s: float) -> npt.NDArray[np.float64]:
    """Seconds added to each driver's ETA for ratings below five stars: ``weight_s`` for a
    one-star average, nothing for five, in proportion between."""
    stars = np.array([UNRATED_AS if d.rating is None else d.rating for d in drivers], dtype=float)
    penalty: npt.NDArray[np.float64] = weight_s * (5.0 - np.clip(stars, 1.0, 5.0)) / 4.0
    return penalty


def solve_batch(
    requests: list[Request],
    drivers: list[FreeDriver],
    cost: CostModel,
    *,
    k: int | None = 10,
    max_eta_s: float = float("inf"),
    allowed: npt.NDArray[np.bool_] | None = None,
    rating_weight_s: float = 0.0,
) -> BatchResult:
    """Minimum total ETA matching of ``requests`` to ``drivers``.

    ``k`` limits each booking to its k nearest drivers (None: every driver, the batch's
    true optimum); pairs slower than ``max_eta_s``, or False in ``allowed`` (bookings ×
    drivers: beyond the radius, declined), are never made. ``rating_weight_s`` (0: off)
    makes a lower-rated driver cost up to that many seconds more, so between drivers about
    as near, the better rated is chosen; the ETAs reported stay the real ones.
    """
    if not requests or not drivers:
        return BatchResult([], {r.id: [] for r in requests})
    eta = cost.eta_matrix(_points(requests), _points(drivers))
    eligible = eta <= max_eta_s
    if allowed is not None:
        eligible &= allowed
    cost_matrix = eta + _tie_break(drivers)[None, :]
    if rating_weight_s > 0:
        cost_matrix = cost_matrix + _rating_penalty(drivers, rating_weight_s)[None, :]
    pairs: list[tuple[int, int]] = []
    open_rows, open_cols = np.arange(len(requests)), np.arange(len(drivers))
    # Bookings whose k nearest all went to others get another round over the drivers left,
    # so k bounds the solver's work without stranding anyone a free driver could reach.
    while open_rows.size and open_cols.size:
        sub_eligible = eligible[np.ix_(open_rows, open_cols)]
        if k is not None and k < open_cols.size:
            ranked = np.where(sub_eligible, eta[np.ix_(open_rows, open_cols)], np.inf)
            nearest = np.argpartition(ranked, k - 1, axis=1)[:, :k]
            mask = np.zeros_like(sub_eligible)
            np.put_along_axis(mask, nearest, True, axis=1)
            sub_eligible &= mask
        if not sub_eligible.any():
            break
        matrix = np.where(sub_eligible, cost_matrix[np.ix_(open_rows, open_cols)], NOT_A_CANDIDATE)
        rows, cols = linear_sum_assignment(matrix)
        made = [
            (open_rows[r], open_cols[c])
            for r, c in zip(rows, cols, strict=True)
            if sub_eligible[r, c]
        ]
        if not made:
            break
        pairs += made
        open_rows = np.setdiff1d(open_rows, [r for r, _ in made])
        open_cols = np.setdiff1d(open_cols, [c for _, c in made])
    assignments = [Assignment(requests[r].id, drivers[c].id, float(eta[r, c])) for r, c in pairs]
    return BatchResult(assignments, _nearest_candidates(requests, drivers, eta, eligible))


def _nearest_candidates(
    requests: list[Request],
    drivers: list[FreeDriver],
    eta: npt.NDArray[np.float64],
    eligible: npt.NDArray[np.bool_],
    limit: int = 10,
) -> dict[int, list[Candidate]]:
    """Each booking's eligible drivers, nearest first, at most ``limit`` (for the log)."""
    limit = min(limit, len(drivers))
    masked = np.where(eligible, eta, np.inf)
    nearest = np.argpartition(masked, limit - 1, axis=1)[:, :limit]
    candidates: dict[int, list[Candidate]] = {}
    for r, request in enumerate(requests):
        row = sorted(nearest[r], key=masked[r].__getitem__)
        candidates[request.id] = [
            Candidate(drivers[c].id, eta_s=float(eta[r, c])) for c in row if eligible[r, c]
        ]
    return candidates


def nearest_first(
    requests: list[Request],
    drivers: list[FreeDriver],
    cost: CostModel,
    *,
    max_eta_s: float = float("inf"),
) -> BatchResult:
    """The baseline: each booking in arrival order takes the nearest driver still free."""
    if not requests or not drivers:
        return BatchResult([], {r.id: [] for r in requests})
    eta = cost.eta_matrix(_points(requests), _points(drivers))
    taken = np.zeros(len(drivers), dtype=bool)
    assignments = []
    for r, request in enumerate(requests):
        row = np.where(taken | (eta[r] > max_eta_s), np.inf, eta[r])
        c = int(np.argmin(row))
        if np.isfinite(row[c]):
            taken[c] = True
            assignments.append(Assignment(request.id, drivers[c].id, float(eta[r, c])))
    return BatchResult(assignments)
