"""Users: riders, drivers and admins. Their tokens live in ``dispatch/tokens.py``."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from dispatch.errors import NotFound
from dispatch.models import AccessToken, Driver, User
from dispatch.states import Role
from dispatch.tokens import hash_token

BOOTSTRAP_ADMIN_NAME = "bootstrap-admin"


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
    """Make ``token`` an admin's token; returns that admin's id. Harmless at every start.

    A bootstrap token that was revoked stays revoked: the operator sets a new one.
    """
    token_hash = hash_token(token)
    existing = session.scalar(
        select(AccessToken.user_id).where(AccessToken.token_hash == token_hash))
    if existing is not None:
        return existing
    admin_id = session.scalar(
        select(User.id).where(User.name == BOOTSTRAP_ADMIN_NAME, User.role == Role.ADMIN.value)
        .order_by(User.id).limit(1)
    )
    if admin_id is None:
        admin = User(name=BOOTSTRAP_ADMIN_NAME, role=Role.ADMIN.value)
        session.add(admin)
        session.flush()
        admin_id = admin.id
    session.execute(
        pg_insert(AccessToken)
        .values(user_id=admin_id, token_hash=token_hash, expires_at=None)
        .on_conflict_do_nothing(index_elements=["token_hash"])
    )
    return session.scalar(select(AccessToken.user_id).where(AccessToken.token_hash == token_hash))


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found", user_id=user_id)
    return user


def user_payload(user: User) -> dict:
    return {
        "id": user.id,
        "name": user.name,
        "role": user.role,
        "created_at": user.created_at.isoformat() if user.created_at else None,
    }
