"""Users: admins create riders, drivers and other admins, each with a bearer token."""

from __future__ import annotations

from dispatch.states import Role
from dispatch.users import create_user, user_payload
from smartroute.token_cache import remember
from web.api import api, parse_body
from web.auth import requires
from web.runtime import db, runtime
from web.schemas import NewUser


@api.post("/users")
@requires(Role.ADMIN)
def post_user():
    body = parse_body(NewUser)
    session = db()
    user, token = create_user(session, body.name, Role(body.role))
    session.commit()
    remember(runtime().redis, token, user.id, user.role)
    # The token is shown once, here; only its hash is kept.
    return user_payload(user) | {"token": token}, 201
