"""Users and their bearer tokens. Only a token's SHA-256 is stored."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from dispatch.models import Driver, User
from dispatch.states import Role

BOOTSTRAP_ADMIN_NAME = "bootstrap-admin"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh bearer token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def create_user(session: Session, name: str, role: Role) -> tuple[User, str]:
    """Create a user (and a driver row for a driver); returns the user and their token."""
    token = new_token()
    user = User(name=name, role=role.value, token_hash=hash_token(token))
    session.add(user)
    session.flush()
    if role == Role.DRIVER:
        session.add(Driver(user_id=user.id, status="offline"))
        session.flush()
    return user, token


def authenticate(session: Session, token: str) -> User | None:
    """The user a bearer token belongs to, or None."""
    return session.execute(
        select(User).where(User.token_hash == hash_token(token))
    ).scalar_one_or_none()


def ensure_bootstrap_admin(session: Session, token: str) -> int:
    """Make ``token`` an admin's token; returns that admin's id. Harmless at every start."""
    session.execute(
        pg_insert(User)
        .values(name=BOOTSTRAP_ADMIN_NAME, role=Role.ADMIN.value, token_hash=hash_token(token))
        .on_conflict_do_nothing(index_elements=["token_hash"])
    )
    return session.scalar(select(User.id).where(User.token_hash == hash_token(token)))


def user_payload(user: User) -> dict:
    return {
        "id": user.id,
        "name": user.name,
        "role": user.role,
        "created_at": user.created_at.isoformat() if user.created_at else None,
    }
