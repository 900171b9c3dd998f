"""Bearer-token authentication and role checks for the API (tokens: ``dispatch/tokens.py``)."""

from __future__ import annotations

import functools
from collections.abc import Callable

from flask import g, request

from dispatch.actors import Actor
from dispatch.states import Role
from dispatch.tokens import MAX_TOKEN_LENGTH
from smartroute.infra.identity import Identity, identify
from web.errors import ApiError
from web.runtime import db, runtime, utcnow


def _bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise ApiError(
            401, "unauthorized", "an Authorization: Bearer token is required", "Authorization"
        )
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_LENGTH:
        raise ApiError(
            401,
            "unauthorized",
            "the Authorization header must be 'Bearer <token>'",
            "Authorization",
        )
    return token


def requires(*roles: Role) -> Callable:
    """The view needs a valid token whose user has one of ``roles`` (any role if none given)."""

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            identity = _holder(_bearer_token())
            if roles and identity.role not in roles:
                allowed = " or ".join(roles)
                raise ApiError(403, "forbidden", f"this needs a {allowed} token")
            g.actor = Actor(identity.user_id, Role(identity.role))
            g.identity = identity
            return view(*args, **kwargs)

        return wrapper

    return decorate


def _holder(token: str) -> Identity:
    """The identity of a live token (``smartroute.infra.identity``; the relay checks alike)."""
    settings, cache = runtime().settings, runtime().redis
    identity = identify(
        token,
        secret_key=runtime().secret_key,
        session=db(),
        cache=cache,
        note_s=settings.token_recheck_s,
        now=utcnow(),
    )
    if identity is None:
        raise _invalid()
    return identity


def _invalid() -> ApiError:
    return ApiError(
        401, "unauthorized", "the token is not valid: unknown, expired or revoked", "Authorization"
    )


def actor() -> Actor:
    return g.actor


def current_token_id() -> int:
    return g.identity.token_id


def current_identity() -> Identity:
    """The identity (user, role, token row and expiry) this request authenticated as."""
    return g.identity
