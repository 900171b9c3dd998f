"""Users: admins create riders, drivers and other admins, each with a bearer token."""

from __future__ import annotations

from dispatch.states import Role
from dispatch.tokens import issue, token_payload
from dispatch.users import create_user, user_payload
from web.api import api, parse_body
from web.auth import requires
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
