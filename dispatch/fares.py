"""Tariffs and fares: what a ride costs, in integer minor units (cents), never floats.

A region's tariff (``Tariff``) names its currency, a base charge, a price per km and per
minute, a minimum fare, and the fees a cancellation or a no-show carries. A fare
(``price``) is the tariff applied to a route's distance and duration, then the minimum,
then the region's surge multiplier (``dispatch.surge``), kept as a whole percentage so no
amount ever passes through a float:

    amount = round_half_up(max(minimum, base + per_km × km + per_minute × minutes) × surge %)

The final fare at completion (``final_amount``) follows one policy against the quote:

- the quoted amount is the price, whether the ride ran shorter or longer than estimated,
  unless the fare measured on the trip exceeds it by more than ``TOLERANCE_PCT`` percent;
- then the rider pays the measured fare, capped at ``CAP_PCT`` percent of the quote.

The measured fare uses the quote's tariff and surge (the terms the rider accepted), the
trip's duration from its start to its completion by the database's clock, and its
distance as the ETA model's road distance between pickup and dropoff: drivers' positions
during a trip are not recorded, so no better distance exists yet.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dispatch.eta import GreatCircleEta
from dispatch.geo import haversine_km
from dispatch.regions import DEFAULT_REGION

# The final fare: the quote stands unless the measured fare is more than 20 % above it;
# then the measured fare, but never more than 150 % of the quote.
TOLERANCE_PCT = 20
CAP_PCT = 150
# A surge multiplier is a whole percentage: 100 is no surge, 150 is ×1.5.
NO_SURGE_PCT = 100

_CURRENCY = re.compile(r"[A-Z]{3}")


@dataclass(frozen=True)
class Tariff:
    """A region's prices, each in minor units of ``currency`` (ISO 4217)."""

    currency: str
    base: int
    per_km: int
    per_minute: int
    minimum: int
    cancellation_fee: int
    no_show_fee: int

    def __post_init__(self) -> None:
        if not _CURRENCY.fullmatch(self.currency):
            raise ValueError(f"currency must be three capital letters, got {self.currency!r}")
        for name in ("base", "per_km", "per_minute", "minimum", "cancellation_fee", "no_show_fee"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number of minor units, at least 0")


# The default region's tariff when configuration names none: €2.50 to start, €1.10 a km,
# €0.25 a minute, €5.00 at least; €3.00 to cancel late, €5.00 for a no-show.
DEFAULT_TARIFF = Tariff("EUR", 250, 110, 25, 500, 300, 500)

_TARIFF_FIELDS = "currency,base,per_km,per_minute,minimum,cancellation_fee,no_show_fee"


def parse_tariffs(spec: str, names: tuple[str, ...]) -> tuple[tuple[str, Tariff], ...]:
    """``"default:EUR,250,110,25,500,300,500;lisbon:EUR,300,120,30,600,300,500"`` →
    (region, tariff) pairs. Amounts are whole minor units; a region left out pays the
    default region's tariff."""
    tariffs: dict[str, Tariff] = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        name, _, values = (v.strip() for v in part.partition(":"))
        if name not in names:
            raise ValueError(f"unknown region {name!r}; regions are {', '.join(names)}")
        if name in tariffs:
            raise ValueError(f"region {name} is given a tariff twice")
        fields = [v.strip() for v in values.split(",")]
        if len(fields) != 7:
            raise ValueError(f"region {name}: expected {_TARIFF_FIELDS}")
        try:
            amounts = [int(v) for v in fields[1:]]
        except ValueError:
            raise ValueError(f"region {name}: amounts are whole minor units (cents)") from None
        try:
            tariffs[name] = Tariff(fields[0], *amounts)
        except ValueError as exc:
            raise ValueError(f"region {name}: {exc}") from None
    return tuple(tariffs.items())


def tariff_for(region: str, tariffs: Mapping[str, Tariff]) -> Tariff:
    """The region's tariff, else the default region's, else ``DEFAULT_TARIFF``."""
    return tariffs.get(region) or tariffs.get(DEFAULT_REGION) or DEFAULT_TARIFF


def divide_half_up(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half up, in integers (both at least 0)."""
    return (2 * numerator + denominator) // (2 * denominator)


@dataclass(frozen=True)
class Route:
    """A trip's road distance and driving time, as the ETA model estimates them."""

    distance_m: int
    duration_s: int


def estimate_route(
    eta: GreatCircleEta, pickup: tuple[float, float], dropoff: tuple[float, float]
) -> Route:
    """Pickup to dropoff by the engine's ETA model: the great-circle distance stretched by
    the road factor, driven at the model's city speed."""
    km = haversine_km(*pickup, *dropoff) * eta.road_factor
    return Route(round(km * 1000), round(eta.eta_s(*pickup, *dropoff)))


@dataclass(frozen=True)
class Fare:
    """A priced trip: the components before surge, the surge, and the amount to pay."""

    currency: str
    base: int
    distance: int
    time: int
    surge_pct: int
    amount: int
    distance_m: int
    duration_s: int

    def as_payload(self) -> dict[str, Any]:
        """The fare as clients see it. ``surge_multiplier`` is the percentage over 100
        (1.5 for 150 %), shown as a number; every amount is an integer of minor units."""
        return {
            "amount": self.amount,
            "currency": self.currency,
            "base": self.base,
            "distance": self.distance,
            "time": self.time,
            "surge_multiplier": self.surge_pct / 100,
            "distance_m": self.distance_m,
            "duration_s": self.duration_s,
        }


def price(tariff: Tariff, route: Route, surge_pct: int = NO_SURGE_PCT) -> Fare:
    """The fare of ``route`` under ``tariff`` and a surge of ``surge_pct`` percent."""
    if surge_pct < NO_SURGE_PCT:
        raise ValueError("a surge multiplier is at least 100 %")
    distance = divide_half_up(tariff.per_km * route.distance_m, 1000)
    time = divide_half_up(tariff.per_minute * route.duration_s, 60)
    metered = max(tariff.minimum, tariff.base + distance + time)
    return Fare(
        currency=tariff.currency,
        base=tariff.base,
        distance=distance,
        time=time,
        surge_pct=surge_pct,
        amount=divide_half_up(metered * surge_pct, 100),
        distance_m=route.distance_m,
        duration_s=route.duration_s,
    )


def final_amount(quoted: int, measured: int) -> int:
    """What the rider pays at completion, from the quoted and the measured fare (the
    module's policy): the quote, unless the measured fare exceeds it by more than
    ``TOLERANCE_PCT`` %, then the measured fare capped at ``CAP_PCT`` % of the quote."""
    if measured * 100 <= quoted * (100 + TOLERANCE_PCT):
        return quoted
    return min(measured, divide_half_up(quoted * CAP_PCT, 100))


@dataclass(frozen=True)
class Fee:
    """A fee a booking carries (a late cancellation, a no-show), in minor units."""

    amount: int
    currency: str

    def as_payload(self) -> dict[str, Any]:
        return {"amount": self.amount, "currency": self.currency}


def cancellation_fee(tariff: Tariff) -> Fee:
    """The fee a rider's cancellation carries under ``tariff`` once the grace period after
    assignment has passed (the caller decides whether it has)."""
    return Fee(tariff.cancellation_fee, tariff.currency)


def no_show_fee(tariff: Tariff) -> Fee:
    """The fee a rider who never came to the pickup is charged under ``tariff``."""
    return Fee(tariff.no_show_fee, tariff.currency)
