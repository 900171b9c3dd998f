"""What a matching attempt writes onto its bookings: an offer to a claimed driver, or a
later, wider try when nobody was in reach."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from dispatch.actors import SYSTEM
from dispatch.bookings.transitions import apply_transition, apply_transitions
from dispatch.matching.policy import MatchPolicy
from dispatch.models import Booking


def make_offer(
    session: Session, booking: Booking, driver_id: int, policy: MatchPolicy, now: dt.datetime
) -> None:
    """Offer a locked pending booking to a driver this transaction has claimed."""
    booking.driver_id = driver_id
    booking.assigned_at = now
    booking.offer_expires_at = now + dt.timedelta(seconds=policy.offer_window_s)
    apply_transition(session, booking, "offer", now=now, actor=SYSTEM)


def make_offers(
    session: Session, offers: list[tuple[Booking, int]], policy: MatchPolicy, now: dt.datetime
) -> None:
    """``make_offer`` for many locked pending bookings, each to a driver this transaction has
    claimed: one UPDATE round trip and one record for all of them."""
    for booking, driver_id in offers:
        booking.driver_id = driver_id
        booking.assigned_at = now
        booking.offer_expires_at = now + dt.timedelta(seconds=policy.offer_window_s)
    apply_transitions(session, [booking for booking, _ in offers], "offer", now=now, actor=SYSTEM)


def no_driver(
    booking: Booking, policy: MatchPolicy, now: dt.datetime, *, outbid: bool = False
) -> None:
    """Nobody offered this time: try again, a little wider. Later, when nobody was in
    reach; at once, keeping its turn (claims.claim_bookings), when drivers were in reach
    but its batch gave them all to other bookings (``outbid``)."""
    booking.match_attempts += 1
    booking.next_attempt_at = now if outbid else now + dt.timedelta(seconds=policy.retry_interval_s)
