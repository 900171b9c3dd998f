"""Ratings: a completed ride's rider rates its driver, and its driver rates the rider."""

from __future__ import annotations

import datetime as dt

from dispatch.ratings import rate, rating_payload
from dispatch.states import Role
from web.api import api, parse_body
from web.auth import actor, requires
from web.runtime import db, runtime
from web.schemas import NewRating


@api.post("/bookings/<id:booking_id>/rating")
@requires(Role.RIDER, Role.DRIVER)
def rate_booking(booking_id: int):
    body = parse_body(NewRating)
    session = db()
    rating = rate(
        session,
        booking_id,
        actor(),
        stars=body.stars,
        comment=body.comment,
        window=dt.timedelta(seconds=runtime().settings.rating_window_s),
    )
    payload = rating_payload(rating)
    session.commit()
    return payload, 201
