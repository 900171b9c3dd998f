"""The booking state machine: which status may follow which, and who may cause it.

pending ──offer──▶ assigned ──accept──▶ accepted ──start──▶ in_progress ──complete──▶ completed
   ▲                  │
   └──decline/lapse───┘
pending, assigned, accepted ──cancel──▶ cancelled
pending ──deadline──▶ expired
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"
    ASSIGNED = "assigned"
    ACCEPTED = "accepted"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class Role(StrEnum):
    RIDER = "rider"
    DRIVER = "driver"
    ADMIN = "admin"


class DriverStatus(StrEnum):
    OFFLINE = "offline"
    AVAILABLE = "available"
    BUSY = "busy"


BOOKING_STATUSES = tuple(s.value for s in Status)
ROLES = tuple(r.value for r in Role)
DRIVER_STATUSES = tuple(s.value for s in DriverStatus)

# A driver holds a booking in these statuses; the database allows one such booking per driver.
ACTIVE_STATUSES = (Status.ASSIGNED.value, Status.ACCEPTED.value, Status.IN_PROGRESS.value)
FINAL_STATUSES = frozenset({Status.COMPLETED, Status.CANCELLED, Status.EXPIRED})

# action -> (statuses it may start from, status it leads to)
TRANSITIONS: dict[str, tuple[frozenset[Status], Status]] = {
    "offer": (frozenset({Status.PENDING}), Status.ASSIGNED),
    "accept": (frozenset({Status.ASSIGNED}), Status.ACCEPTED),
    "decline": (frozenset({Status.ASSIGNED}), Status.PENDING),
    "lapse": (frozenset({Status.ASSIGNED}), Status.PENDING),
    "start": (frozenset({Status.ACCEPTED}), Status.IN_PROGRESS),
    "complete": (frozenset({Status.IN_PROGRESS}), Status.COMPLETED),
    "cancel": (frozenset({Status.PENDING, Status.ASSIGNED, Status.ACCEPTED}), Status.CANCELLED),
    "expire": (frozenset({Status.PENDING}), Status.EXPIRED),
}

# The actions a booking's driver takes through the API.
DRIVER_ACTIONS = ("accept", "decline", "start", "complete")


def next_status(action: str, current: Status | str) -> Status | None:
    """The status ``action`` leads to from ``current``, or None if it is not allowed."""
    sources, target = TRANSITIONS[action]
    return target if Status(current) in sources else None
