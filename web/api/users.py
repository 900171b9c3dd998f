"""Users: admins create riders, drivers and other admins, each with a bearer token; a rider
reads who they are."""

from __future__ import annotations

from dispatch.ratings import averages
from dispatch.states import Role
from dispatch.tokens import issue, token_payload
from dispatch.users import create_user, get_user, user_payload
from web.api import api, parse_body
from web.auth import actor, requires
from web.runtime import db, runtime
from web.schemas import NewUser


@api.post("/users")
@requires(Role.ADMIN)
def post_user():
    body = parse_body(NewUser)
    session = db()
    settings = runtime().settings
    user = create_user(session, body.name, Role(body.role))
    token, row = issue(session, user, runtime().secret_key, settings.token_ttl_s)
    session.commit()
    return user_payload(user) | token_payload(token, row), 201


@api.get("/riders/me")
@requires(Role.RIDER)
def get_rider():
    """The calling rider, with the average of the ratings drivers gave them (null if none)."""
    session = db()
    rider = get_user(session, actor().id)
    rating = averages(session, {rider.id}).get(rider.id)
    return user_payload(rider) | {"rating": rating.payload() if rating is not None else None}
