"""Bearer tokens: signed, expiring, and revocable.

An issued token is a JWT (HS256, signed with ``SMARTROUTE_SECRET_KEY``) naming its user, role,
row and expiry, so any process holding the key — the relay too, which has no database — can
reject a forged or expired token without a lookup. Its ``access_tokens`` row is what makes it
revocable: the API accepts a token only while its row is neither revoked nor expired. Only the
row's SHA-256 of the token is stored.

The one token that is not signed is the operator's bootstrap admin token
(``SMARTROUTE_ADMIN_TOKEN``): a secret they chose, valid until they change it or revoke it.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt
from sqlalchemy import BigInteger, ColumnElement, and_, bindparam, exists, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from dispatch.errors import DispatchError
from dispatch.models import AccessToken, User

ALGORITHM = "HS256"
ISSUER = "smartroute"
# The longest token worth reading: an issued one, with the largest ids, is under 250.
MAX_TOKEN_LENGTH = 256


@dataclass(frozen=True)
class Claims:
    """What a verified signed token says about itself."""

    user_id: int
    role: str
    token_id: int
    expires_at: dt.datetime


@dataclass(frozen=True)
class Holder:
    """Who presented a token that the database accepted, and which token it was."""

    user: User
    token_id: int
    expires_at: dt.datetime | None


def live() -> ColumnElement[bool]:
    """The condition a live token's row meets: not revoked, and not expired by the
    database's clock (a token without an expiry, the bootstrap one, lives until revoked)."""
    return and_(
        AccessToken.revoked_at.is_(None),
        AccessToken.expires_at.is_(None) | (AccessToken.expires_at > func.now()),
    )


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def looks_signed(token: str) -> bool:
    """A JWT has three dot-separated parts; a bootstrap token is one opaque string."""
    return token.count(".") == 2


def new_secret() -> str:
    """256 random bits, URL-safe: a fresh bootstrap token or signing key."""
    return secrets.token_urlsafe(32)


def sign(
    secret: str,
    user_id: int,
    role: str,
    token_id: int,
    issued_at: dt.datetime,
    expires_at: dt.datetime,
) -> str:
    claims = {
        "iss": ISSUER,
        "sub": str(user_id),
        "role": role,
        "jti": str(token_id),
        "iat": issued_at,
        "exp": expires_at,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify(secret: str, token: str) -> Claims | None:
    """The claims of a token signed with ``secret`` and not yet expired; None otherwise."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "jti", "iss"]},
        )
        return Claims(
            user_id=int(claims["sub"]),
            role=str(claims["role"]),
            token_id=int(claims["jti"]),
            expires_at=dt.datetime.fromtimestamp(claims["exp"], dt.UTC),
        )
    except (jwt.PyJWTError, KeyError, TypeError, ValueError):
        return None


def verify_again(secret: str, token: str, now: dt.datetime) -> Claims | None:
    """``verify`` for a token this process may have checked before: a signature does not
    change, so only the expiry is checked again. (Revocation is never remembered here.)"""
    claims = _verified(secret, token)
    return claims if claims is not None and claims.expires_at > now else None


@functools.lru_cache(maxsize=4096)  # The tokens of one API process's recent callers.
def _verified(secret: str, token: str) -> Claims | None:
    return verify(secret, token)


def issue(
    session: Session,
    user: User,
    secret: str,
    ttl_s: int,
    now: dt.datetime | None = None,
    *,
    session_started_at: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> tuple[str, AccessToken]:
    """A new signed token for ``user``, valid for ``ttl_s`` seconds (and never past
    ``not_after``). It starts a new family unless ``session_started_at`` carries one over.
    The caller commits."""
    now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    expires_at = now + dt.timedelta(seconds=ttl_s)
    if not_after is not None:
        expires_at = min(expires_at, not_after)
    # The row id goes into the token, so the row exists first; its hash follows.
    row = AccessToken(
        user_id=user.id,
        token_hash=new_secret(),
        issued_at=now,
        expires_at=expires_at,
        session_started_at=session_started_at or now,
    )
    session.add(row)
    session.flush()
    token = sign(secret, user.id, user.role, row.id, now, expires_at)
    row.token_hash = hash_token(token)
    session.flush()
    return token, row


def authenticate(session: Session, token: str, claims: Claims | None) -> Holder | None:
    """The holder of a live token, by its row: neither revoked nor expired.

    ``claims`` are the token's, already checked by ``verify`` (signature and expiry first),
    or None for the unsigned bootstrap token.
    """
    row = session.execute(
        select(AccessToken, User)
        .join(User, User.id == AccessToken.user_id)
        .where(AccessToken.token_hash == hash_token(token), live())
    ).one_or_none()
    if row is None:
        return None
    access, user = row
    if claims is not None and (claims.token_id != access.id or claims.user_id != user.id):
        return None
    return Holder(user=user, token_id=access.id, expires_at=access.expires_at)


def revoke(session: Session, user_id: int, token_id: int | None = None) -> list[str]:
    """Revoke one token of a user, or all of them; returns the revoked tokens' hashes."""
    statement = (
        update(AccessToken)
        .where(AccessToken.user_id == user_id, AccessToken.revoked_at.is_(None))
        .values(revoked_at=func.greatest(func.now(), AccessToken.issued_at))
        .returning(AccessToken.token_hash)
    )
    if token_id is not None:
        statement = statement.where(AccessToken.id == token_id)
    return list(session.scalars(statement))


def rotate(
    session: Session,
    user: User,
    token_id: int,
    secret: str,
    ttl_s: int,
    max_lifetime_s: int,
    now: dt.datetime | None = None,
) -> tuple[str, AccessToken, str] | None:
    """Refresh: revoke token ``token_id`` and issue its successor in the same family.

    Returns the new token, its row and the old token's hash; None if the old token is no
    longer live (revoked, expired, or refreshed already by a concurrent request) or its
    family has reached ``max_lifetime_s``. The successor never outlives the family. The
    revocation is a compare-and-set, so two refreshes of one token cannot both succeed.
    The caller commits, so the revocation and the new token stand or fall together.
    """
    now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    old = session.execute(
        update(AccessToken)
        .where(
            AccessToken.id == token_id,
            AccessToken.user_id == user.id,
            live(),
            AccessToken.expires_at.is_not(None),
        )
        .values(revoked_at=func.greatest(func.now(), AccessToken.issued_at))
        .returning(AccessToken.token_hash, AccessToken.session_started_at)
    ).one_or_none()
    if old is None:
        return None
    old_hash, started = old
    not_after = started + dt.timedelta(seconds=max_lifetime_s)
    if not_after <= now:
        return None
    token, row = issue(
        session, user, secret, ttl_s, now, session_started_at=started, not_after=not_after
    )
    return token, row, old_hash


def ended_token_ids(session: Session, token_ids: Iterable[int]) -> set[int]:
    """Which of these tokens are no longer live (revoked, expired or gone): one query over
    the primary key, which answers only with the few that ended, however many are asked."""
    ids = sorted(set(token_ids))
    if not ids:
        return set()
    # One array parameter rather than one per id: a relay may hold thousands.
    asked = (
        func.unnest(bindparam("ids", ids, type_=ARRAY(BigInteger)))
        .table_valued("id")
        .render_derived(name="asked")
    )
    ended: set[int] = set(
        session.scalars(
            select(asked.c.id).where(~exists().where(AccessToken.id == asked.c.id, live()))
        )
    )
    return ended


class TokenNotLive(DispatchError):
    """An action came with a token that has expired or been revoked since it was checked."""

    code = "unauthorized"


def held_live(token_id: Any) -> ColumnElement[bool]:
    """The condition "token ``token_id`` is live", holding its row against revocation until
    the caller's transaction ends; for the WHERE of the statement acting with the token,
    where it costs no round trip of its own (``hold_live`` asks it alone)."""
    return (
        select(AccessToken.id)
        .where(AccessToken.id == token_id, live())
        .with_for_update(read=True)
        .exists()
    )


def hold_live(session: Session, token_id: int) -> bool:
    """Whether token ``token_id`` is live, holding its row against revocation until the
    caller's transaction ends: what is done in that transaction was done with a live token."""
    return bool(session.scalar(select(held_live(token_id))))


def token_payload(token: str, row: AccessToken) -> dict[str, Any]:
    """How a newly issued token is shown: once, here; only its hash is kept."""
    return {
        "token": token,
        "token_id": row.id,
        "expires_at": row.expires_at.isoformat() if row.expires_at else None,
    }
