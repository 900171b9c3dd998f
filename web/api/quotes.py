"""Quotes: a rider asks what a trip would cost before booking it."""

from __future__ import annotations

from dispatch import quotes as service
from dispatch.eta import GreatCircleEta
from dispatch.matching.policy import MatchPolicy
from dispatch.regions import region_for
from dispatch.states import Role
from web.api import api, parse_body
from web.auth import actor, requires
from web.limits import limited
from web.runtime import db, runtime
from web.schemas import NewQuote


def pricing() -> service.Pricing:
    """The pricing terms the settings give: tariffs, the ETA model, the quote's validity,
    and who counts as a free driver for the pickup ETA."""
    settings = runtime().settings
    return service.Pricing(
        tariffs=dict(settings.tariffs),
        eta=GreatCircleEta(speed_kmh=settings.speed_kmh, road_factor=settings.road_factor),
        quote_ttl_s=settings.quote_ttl_s,
        match=MatchPolicy(
            radius_km=settings.match_radius_km,
            driver_stale_s=settings.driver_stale_s,
            max_radius_km=settings.max_radius_km,
        ),
    )


@api.post("/quotes")
@requires(Role.RIDER)
@limited("quote")
def create_quote():
    body = parse_body(NewQuote)
    session = db()
    quote = service.create_quote(
        session,
        actor().id,
        (body.pickup.lat, body.pickup.lng),
        (body.dropoff.lat, body.dropoff.lng),
        region=region_for(body.pickup.lat, body.pickup.lng, runtime().settings.regions),
        pricing=pricing(),
        pickup_at=body.pickup_at,
    )
    session.commit()
    return quote.as_payload(), 201
