"""Bearer-token authentication and role checks for the API (tokens: ``dispatch/tokens.py``)."""

from __future__ import annotations

import functools
from collections.abc import Callable

from flask import g, request

from dispatch.bookings import Actor
from dispatch.states import Role
from dispatch.tokens import MAX_TOKEN_LENGTH, authenticate
from smartroute.token_cache import remember
from web.errors import ApiError
from web.runtime import db, runtime


def _bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise ApiError(401, "unauthorized", "an Authorization: Bearer token is required",
                       "Authorization")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_LENGTH:
        raise ApiError(401, "unauthorized", "the Authorization header must be 'Bearer <token>'",
                       "Authorization")
    return token


def requires(*roles: Role) -> Callable:
    """The view needs a valid token whose user has one of ``roles`` (any role if none given)."""

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            token = _bearer_token()
            holder = authenticate(db(), runtime().settings.secret_key, token)
            if holder is None:
                raise ApiError(401, "unauthorized",
                               "the token is not valid: unknown, expired or revoked",
                               "Authorization")
            user = holder.user
            # The relay, which has no database, knows live tokens through this cache.
            remember(runtime().redis, token, user.id, user.role, holder.expires_at)
            if roles and user.role not in roles:
                allowed = " or ".join(roles)
                raise ApiError(403, "forbidden", f"this needs a {allowed} token")
            g.actor = Actor(user.id, Role(user.role))
            g.token_id = holder.token_id
            return view(*args, **kwargs)

        return wrapper

    return decorate


def actor() -> Actor:
    return g.actor


def current_token_id() -> int:
    return g.token_id
