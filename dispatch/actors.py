"""Who acts on a booking: a user with a role, or the system itself.

Every status change is recorded with its actor, so the audit trail can say who moved a
booking; the API and the relay build one from the token they accepted.
"""

from __future__ import annotations

from dataclasses import dataclass

from dispatch.states import Role


@dataclass(frozen=True)
class Actor:
    """Who is acting: a user id and role (the system acts with id None)."""

    id: int | None
    role: Role | None

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN


SYSTEM = Actor(id=None, role=None)
