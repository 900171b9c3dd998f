"""Quotes: a price a rider is offered before booking, and what becomes of it.

``create_quote`` prices a trip under the region's tariff and current surge
(``dispatch.fares``, ``dispatch.surge``), says how soon the nearest free driver could
reach the pickup, and stores the quote with its expiry. ``price_booking`` gives a new
booking its price in the booking's own transaction: the rider's quote when the request
names one (their own, unexpired, unused, for the same trip), else a quote made there and
then, so every booking is priced up front on stored terms. ``settle_fare`` sets the final
fare at completion under the policy in ``dispatch.fares``; ``booking_fee`` reads the
cancellation or no-show fee a booking carries from the terms it was priced on.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Interval, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from dispatch import fares, surge
from dispatch.db import transaction_now
from dispatch.errors import DispatchError
from dispatch.eta import GreatCircleEta
from dispatch.geo import bounding_box, haversine_km
from dispatch.matching.policy import MatchPolicy, free_driver
from dispatch.models import Booking, BookingEvent, Driver, Quote
from dispatch.states import Status

if TYPE_CHECKING:
    from dispatch.bookings.payloads import BookingSnapshot

# A booking on a quote must be for the quoted trip: pickup and dropoff each within this of
# the quoted ones (a client re-sending the same coordinates is always within it).
SAME_PLACE_M = 100.0


class QuoteNotFound(DispatchError):
    """No quote of this rider's has this id (someone else's looks the same)."""

    code = "quote_not_found"


class QuoteExpired(DispatchError):
    """The quote's validity ended before the booking was made."""

    code = "quote_expired"


class QuoteUsed(DispatchError):
    """The quote already priced a booking."""

    code = "quote_used"


class QuoteMismatch(DispatchError):
    """The booking's pickup or dropoff is not the quoted trip's."""

    code = "quote_mismatch"


@dataclass(frozen=True)
class Pricing:
    """What pricing needs from configuration: the tariffs, the ETA model, how long a quote
    stands, and the free-driver policy for the pickup ETA."""

    tariffs: Mapping[str, fares.Tariff]
    eta: GreatCircleEta
    quote_ttl_s: int
    match: MatchPolicy


@dataclass(frozen=True)
class QuoteView:
    """A stored quote, as its rider sees it."""

    id: int
    fare: fares.Fare
    pickup_eta_s: int | None
    expires_at: dt.datetime
    region: str

    def as_payload(self) -> dict[str, Any]:
        return {
            "quote_id": self.id,
            "fare": self.fare.as_payload(),
            "pickup_eta_s": self.pickup_eta_s,
            "expires_at": self.expires_at.isoformat(),
            "region": self.region,
        }


Place = tuple[float, float]


def create_quote(
    session: Session,
    rider_id: int,
    pickup: Place,
    dropoff: Place,
    *,
    region: str,
    pricing: Pricing,
    pickup_at: dt.datetime | None = None,
    with_pickup_eta: bool = True,
) -> QuoteView:
    """Price the trip, store the quote and return it; the caller commits.

    Stamped and timed out by the database's clock, in the INSERT itself; Core, not the
    ORM: the row is only written here (a booking priced on it reads what it needs from the
    returned view, ``price_booking``)."""
    tariff = fares.tariff_for(region, pricing.tariffs)
    route = fares.estimate_route(pricing.eta, pickup, dropoff)
    fare = fares.price(tariff, route, surge.current_pct(session, region))
    eta_s = (
        pickup_eta_s(session, pickup, pricing, transaction_now(session))
        if with_pickup_eta
        else None
    )
    quote_id, expires_at = (
        session.connection()
        .execute(
            _INSERT_QUOTE,
            {
                "user_id": rider_id,
                "region": region,
                "pickup_lat": pickup[0],
                "pickup_lng": pickup[1],
                "dropoff_lat": dropoff[0],
                "dropoff_lng": dropoff[1],
                "pickup_at": pickup_at,
                "currency": tariff.currency,
                "base": tariff.base,
                "per_km": tariff.per_km,
                "per_minute": tariff.per_minute,
                "minimum": tariff.minimum,
                "cancellation_fee": tariff.cancellation_fee,
                "no_show_fee": tariff.no_show_fee,
                "surge_pct": fare.surge_pct,
                "distance_m": fare.distance_m,
                "duration_s": fare.duration_s,
                "distance_amount": fare.distance,
                "time_amount": fare.time,
                "amount": fare.amount,
                "pickup_eta_s": eta_s,
                "ttl": dt.timedelta(seconds=pricing.quote_ttl_s),
            },
        )
        .one()
    )
    return QuoteView(quote_id, fare, eta_s, expires_at, region)


_INSERT_QUOTE = (
    insert(Quote)
    .values(created_at=func.now(), expires_at=func.now() + bindparam("ttl", type_=Interval))
    .returning(Quote.id, Quote.expires_at)
)


def pickup_eta_s(session: Session, pickup: Place, pricing: Pricing, now: dt.datetime) -> int | None:
    """Seconds for the nearest free driver within the widest search radius to reach the
    pickup, by the ETA model; None when there is none."""
    conditions = [free_driver(pricing.match, now)]
    box = bounding_box(*pickup, pricing.match.max_radius_km)
    if box is not None:
        min_lat, max_lat, min_lng, max_lng = box
        conditions += [Driver.lat.between(min_lat, max_lat), Driver.lng.between(min_lng, max_lng)]
    located = session.execute(select(Driver.lat, Driver.lng).where(*conditions)).all()
    reachable = [
        pricing.eta.eta_s(lat, lng, *pickup)
        for lat, lng in located
        if lat is not None
        and lng is not None
        and haversine_km(lat, lng, *pickup) <= pricing.match.max_radius_km
    ]
    return round(min(reachable)) if reachable else None


def price_booking(
    session: Session,
    rider_id: int,
    quote_id: int | None,
    pickup: Place,
    dropoff: Place,
    *,
    region: str,
    pricing: Pricing | None,
) -> dict[str, Any]:
    """The price columns of a new booking: from the rider's quote ``quote_id``, else from
    a quote made now (``pricing``); empty (an unpriced booking) when neither is given.

    The quote's row is locked until the caller's transaction ends, so two bookings racing
    for one quote are settled here: the second sees the first's booking and is refused
    (the unique index on ``cab_bookings.quote_id`` has the last word).
    """
    if quote_id is None:
        if pricing is None:
            return {}
        made = create_quote(
            session,
            rider_id,
            pickup,
            dropoff,
            region=region,
            pricing=pricing,
            with_pickup_eta=False,
        )
        quote_id, fare = made.id, made.fare
    else:
        fare = _fare(_redeem(session, rider_id, quote_id, pickup, dropoff))
    return {
        "quote_id": quote_id,
        "fare_currency": fare.currency,
        "quoted_fare": fare.amount,
        "fare": _quoted(fare),
    }


def _redeem(session: Session, rider_id: int, quote_id: int, pickup: Place, dropoff: Place) -> Quote:
    # Only the rider's own quote is locked: another rider's attempt neither waits on it nor
    # learns that it exists.
    quote = session.execute(
        select(Quote)
        .where(Quote.id == quote_id, Quote.user_id == rider_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if quote is None:
        raise QuoteNotFound("you have no quote with this id", quote_id=quote_id)
    if quote.expires_at <= transaction_now(session):
        raise QuoteExpired(
            "the quote has expired; ask for a new one",
            quote_id=quote_id,
            expired_at=quote.expires_at.isoformat(),
        )
    used = session.scalar(select(Booking.id).where(Booking.quote_id == quote_id))
    if used is not None:
        raise QuoteUsed("the quote already priced a booking", quote_id=quote_id)
    for name, place, quoted in (
        ("pickup", pickup, (quote.pickup_lat, quote.pickup_lng)),
        ("dropoff", dropoff, (quote.dropoff_lat, quote.dropoff_lng)),
    ):
        if haversine_km(*place, *quoted) * 1000 > SAME_PLACE_M:
            raise QuoteMismatch(
                f"the {name} is not the quoted one; ask for a quote for this trip",
                place=name,
                quote_id=quote_id,
            )
    return quote


def _tariff(quote: Quote) -> fares.Tariff:
    return fares.Tariff(
        quote.currency,
        quote.base,
        quote.per_km,
        quote.per_minute,
        quote.minimum,
        quote.cancellation_fee,
        quote.no_show_fee,
    )


def quoted_breakdown(quote: Quote) -> dict[str, Any]:
    """A booking's ``fare`` until completion: the quote's, marked as not final."""
    return _quoted(_fare(quote))


def _fare(quote: Quote) -> fares.Fare:
    return fares.Fare(
        quote.currency,
        quote.base,
        quote.distance_amount,
        quote.time_amount,
        quote.surge_pct,
        quote.amount,
        quote.distance_m,
        quote.duration_s,
    )


def _quoted(fare: fares.Fare) -> dict[str, Any]:
    return fare.as_payload() | {"quoted_amount": fare.amount, "final": False}


def settle_fare(session: Session, booking: BookingSnapshot) -> BookingSnapshot:
    """Set a just-completed booking's final fare (``final_fare``) and return the booking as
    it now is; an unpriced booking is returned as it was."""
    settled = final_fare(session, booking)
    if settled is None:
        return booking
    amount, breakdown = settled
    session.execute(
        update(Booking)
        .where(Booking.id == booking.id)
        .values(final_fare=amount, fare=breakdown)
        .execution_options(synchronize_session=False)
    )
    return replace(booking, final_fare=amount, fare=breakdown)


def final_fare(session: Session, booking: BookingSnapshot) -> tuple[int, dict[str, Any]] | None:
    """The fare a ride ending now costs (``dispatch.fares.final_amount``) and its breakdown,
    or None for an unpriced booking.

    The trip's duration runs from its start (the audit trail's move to in progress) to
    this transaction's time, both by the database's clock; its distance is the ETA
    model's estimate between pickup and dropoff, which the quote stored.
    """
    if booking.quote_id is None:
        return None
    # One statement: the quote's terms, and how long the trip has run by the database's
    # clock (from the audit trail's move to in progress to this transaction's time).
    row = session.execute(
        _QUOTE_AND_TRIP_TIME, {"quote_id": booking.quote_id, "booking_id": booking.id}
    ).one()
    quote, ran_s = row[0], row[1]
    duration_s = max(0, round(ran_s)) if ran_s is not None else 0
    route = fares.Route(quote.distance_m, duration_s)
    measured = fares.price(_tariff(quote), route, quote.surge_pct)
    amount = fares.final_amount(quote.amount, measured.amount)
    breakdown = measured.as_payload() | {
        "amount": amount,
        "quoted_amount": quote.amount,
        "measured_amount": measured.amount,
        "final": True,
        "policy": (
            f"the quote unless the measured fare exceeds it by more than "
            f"{fares.TOLERANCE_PCT}%, then the measured fare capped at {fares.CAP_PCT}% of it"
        ),
    }
    return amount, breakdown


_QUOTE_AND_TRIP_TIME = select(
    Quote,
    select(func.extract("epoch", func.now() - func.max(BookingEvent.created_at)))
    .where(
        BookingEvent.booking_id == bindparam("booking_id"),
        BookingEvent.to_status == Status.IN_PROGRESS.value,
    )
    .scalar_subquery(),
).where(Quote.id == bindparam("quote_id"))


def booking_fee(
    session: Session, booking_id: int, kind: Literal["cancellation", "no_show"]
) -> fares.Fee | None:
    """The fee of ``kind`` under the terms the booking was priced on; None if it was not
    priced. Whether the fee applies (a grace period, a wait) is the caller's decision."""
    quote = session.scalar(
        select(Quote).join(Booking, Booking.quote_id == Quote.id).where(Booking.id == booking_id)
    )
    if quote is None:
        return None
    tariff = _tariff(quote)
    return fares.cancellation_fee(tariff) if kind == "cancellation" else fares.no_show_fee(tariff)
