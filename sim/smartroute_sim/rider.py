"""The simulated riders: what each one does with a booking, and the requests a rider's app
sends for it.

A rider may ask for a quote first and book on it, cancel (right after booking, before a
driver is assigned, or once a driver has accepted), never come to the pickup (the driver
reports a no-show), and rate the driver after the ride. Each booking's choices are drawn
from the run's seed and the booking's place in the run (``rider_plan``), so one seed gives
the same riders' choices whichever thread or driver handles the booking.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import requests

from smartroute_sim.client import Api

CANCEL_REASONS = ("changed my plans", "found another ride", "waited too long")
RIDER_COMMENTS = ("smooth ride", "friendly driver", "took a long way round", "clean car")


@dataclass(frozen=True)
class RiderPolicy:
    """Probabilities of each rider's choice, per booking; all off by default."""

    quote: float = 0.0  # Ask for a quote and book on it (else booked unquoted).
    cancel_before_assignment: float = 0.0  # Cancel right after booking.
    cancel_after_assignment: float = 0.0  # Cancel once a driver has accepted.
    no_show: float = 0.0  # Never come to the pickup.
    rate: float = 0.0  # Rate the driver after a completed ride.
    comment: float = 0.5  # Of the ratings given, the share with a comment.

    @property
    def active(self) -> bool:
        return self != RiderPolicy()


@dataclass(frozen=True)
class Rating:
    stars: int
    comment: str | None = None

    def body(self) -> dict:
        return {"stars": self.stars, **({"comment": self.comment} if self.comment else {})}


def draw_rating(
    rng: random.Random, rate: float, comment: float, comments: tuple[str, ...]
) -> Rating | None:
    """A rating (mostly good, as ratings are), or None for none given."""
    if rng.random() >= rate:
        return None
    stars = rng.choices((1, 2, 3, 4, 5), weights=(1, 1, 3, 8, 12))[0]
    return Rating(stars, rng.choice(comments) if rng.random() < comment else None)


@dataclass(frozen=True)
class RiderPlan:
    """One booking's rider: what they will do with it."""

    quote: bool = False
    # "before_assignment", "after_assignment" or None (the rider does not cancel).
    cancel: str | None = None
    cancel_reason: str | None = None
    no_show: bool = False
    rating: Rating | None = None


def rider_plan(policy: RiderPolicy, seed: int, index: int) -> RiderPlan:
    """The choices of the rider of the run's ``index``-th booking."""
    if not policy.active:
        return RiderPlan()
    rng = random.Random(f"{seed}:rider:{index}")
    quote = rng.random() < policy.quote
    r = rng.random()
    cancel = None
    if r < policy.cancel_before_assignment:
        cancel = "before_assignment"
    elif r < policy.cancel_before_assignment + policy.cancel_after_assignment:
        cancel = "after_assignment"
    reason = rng.choice(CANCEL_REASONS)
    no_show = cancel is None and rng.random() < policy.no_show
    rating = draw_rating(rng, policy.rate, policy.comment, RIDER_COMMENTS)
    return RiderPlan(quote, cancel, reason if cancel else None, no_show, rating)


def ask_quote(api: Api, token: str, trip: dict) -> dict | None:
    """``POST /v1/quotes`` for ``trip``: the quote, or None if none was given."""
    try:
        response = api.call("POST", "/v1/quotes", trip, token=token, retry=True)
    except requests.RequestException:
        return None
    return response.json() if response.status_code == 201 else None


def cancel(api: Api, token: str, booking_id: int, reason: str | None) -> dict | None:
    """The rider's cancel: the booking as cancelled (with any fee), or None if refused."""
    body = {"reason": reason} if reason else None
    response = api.answer("POST", f"/v1/bookings/{booking_id}/cancel", body, token=token)
    return response.json() if response is not None and response.status_code == 200 else None


def rate(api: Api, token: str, booking_id: int, rating: Rating) -> bool:
    """Rate the other side of a completed ride (rider or driver, by ``token``)."""
    response = api.answer("POST", f"/v1/bookings/{booking_id}/rating", rating.body(), token=token)
    return response is not None and response.status_code == 201
