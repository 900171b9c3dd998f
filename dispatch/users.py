"""Users: riders, drivers and admins. Their tokens live in ``dispatch/tokens.py``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from dispatch.errors import DispatchError, NotFound
from dispatch.models import AccessToken, Driver, User
from dispatch.states import Role
from dispatch.tokens import hash_token

BOOTSTRAP_ADMIN_NAME = "bootstrap-admin"
# Names the advisory lock that makes starting processes register the token one at a time.
BOOTSTRAP_LOCK = 0x5352_4241


class BootstrapTokenRefused(DispatchError):
    """The configured bootstrap token cannot be made the admin's: the operator sets another."""

    code = "bootstrap_token_refused"


def create_user(session: Session, name: str, role: Role) -> User:
    """Create a user (and a driver row for a driver). The caller issues their token."""
    user = User(name=name, role=role.value)
    session.add(user)
    session.flush()
    if role == Role.DRIVER:
        session.add(Driver(user_id=user.id, status="offline"))
        session.flush()
    return user


def ensure_bootstrap_admin(session: Session, token: str) -> int:
    """Make ``token`` the one live bootstrap token; returns the bootstrap admin's id.

    Harmless at every start. Processes starting at once (several API replicas, a migrate
    job beside them) take turns on an advisory lock held until the caller's transaction
    ends, so they create one admin and one row between them. Every other bootstrap token
    is revoked: the operator changed ``SMARTROUTE_ADMIN_TOKEN``, and the old value must
    stop working at once, not linger as a second admin token. A token that was revoked
    stays revoked (raises BootstrapTokenRefused): the operator sets a new one.
    """
    session.execute(select(func.pg_advisory_xact_lock(BOOTSTRAP_LOCK)))
    token_hash = hash_token(token)
    existing = session.execute(
        select(
            AccessToken.user_id,
            AccessToken.expires_at,
            AccessToken.revoked_at,
            User.name,
            User.role,
        )
        .join(User, User.id == AccessToken.user_id)
        .where(AccessToken.token_hash == token_hash)
    ).one_or_none()
    if existing is not None:
        if (
            existing.expires_at is not None
            or existing.name != BOOTSTRAP_ADMIN_NAME
            or existing.role != Role.ADMIN.value
        ):
            raise BootstrapTokenRefused("it is another user's issued token; choose a new one")
        if existing.revoked_at is not None:
            raise BootstrapTokenRefused("this token was revoked; choose a new one")
        admin_id: int = existing.user_id
    else:
        found = session.scalar(
            select(User.id)
            .where(User.name == BOOTSTRAP_ADMIN_NAME, User.role == Role.ADMIN.value)
            .order_by(User.id)
            .limit(1)
        )
        if found is None:
            admin = User(name=BOOTSTRAP_ADMIN_NAME, role=Role.ADMIN.value)
            session.add(admin)
            session.flush()
            found = admin.id
        admin_id = found
        session.execute(
            pg_insert(AccessToken)
            .values(user_id=admin_id, token_hash=token_hash, expires_at=None)
            .on_conflict_do_nothing(index_elements=["token_hash"])
        )
    session.execute(
        update(AccessToken)
        .where(
            _bootstrap_tokens(),
            AccessToken.revoked_at.is_(None),
            AccessToken.token_hash != token_hash,
        )
        .values(revoked_at=func.greatest(func.now(), AccessToken.issued_at))
    )
    return admin_id


def revoked_bootstrap_hashes(session: Session, since: dt.datetime) -> list[str]:
    """Hashes of the bootstrap tokens revoked at or after ``since``, for the token caches.

    Every start hands them to the caches again, so a start that could not reach Redis
    when it revoked them is made good by the next one."""
    return list(
        session.scalars(
            select(AccessToken.token_hash)
            .where(_bootstrap_tokens(), AccessToken.revoked_at >= since)
            .order_by(AccessToken.id)
        )
    )


def _bootstrap_tokens() -> ColumnElement[bool]:
    """Bootstrap tokens: the bootstrap admin's tokens without an expiry. Every issued
    token has one (dispatch/tokens.py), so the operator's are the only ones without."""
    bootstrap_admins = select(User.id).where(
        User.name == BOOTSTRAP_ADMIN_NAME, User.role == Role.ADMIN.value
    )
    return AccessToken.user_id.in_(bootstrap_admins.scalar_subquery()) & AccessToken.expires_at.is_(
        None
    )


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found", user_id=user_id)
    return user


def user_payload(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "name": user.name,
        "role": user.role,
        "created_at": user.created_at.isoformat() if user.created_at else None,
    }
