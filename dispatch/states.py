"""The booking state machine: which status may follow which, and who may cause it.

pending ──offer──▶ assigned ──accept──▶ accepted ──arrive──▶ arrived ──start──▶ in_progress
   ▲                  │                  │  │                  │  │                  │
   └──decline/lapse───┘                  │  └──────start───────┼──┼─────────────────▶│
   └──driver_cancel/rematch──────────────┴─────────────────────┘  │               complete
                                                          no_show ▼                  ▼
                                                              no_show            completed
pending, assigned, accepted, arrived ──cancel──▶ cancelled
pending, assigned, accepted, arrived, in_progress ──force_cancel──▶ cancelled
in_progress ──force_complete──▶ completed
pending ──deadline──▶ expired

A driver may start from accepted as well as from arrived: an app that never reports its
arrival still carries its rider. A driver who cancels before pickup hands the booking back
to matching (``driver_cancel``), as beat does with a ride never started (``rematch``); an
admin may end any open booking (``force_cancel``) or close a ride under way
(``force_complete``). ``CAUSED_BY`` says who may cause each action.
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
    ARRIVED = "arrived"
    NO_SHOW = "no_show"


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
ACTIVE_STATUSES = (
    Status.ASSIGNED.value,
    Status.ACCEPTED.value,
    Status.ARRIVED.value,
    Status.IN_PROGRESS.value,
)
FINAL_STATUSES = frozenset({Status.COMPLETED, Status.CANCELLED, Status.EXPIRED, Status.NO_SHOW})
# Accepted by a driver who has not yet picked the rider up: what a stuck-ride sweep looks at.
UNSTARTED_STATUSES = (Status.ACCEPTED.value, Status.ARRIVED.value)

_BEFORE_PICKUP = frozenset({Status.ACCEPTED, Status.ARRIVED})
_OPEN = frozenset({Status.PENDING, *(Status(s) for s in ACTIVE_STATUSES)})

# action -> (statuses it may start from, status it leads to)
TRANSITIONS: dict[str, tuple[frozenset[Status], Status]] = {
    "offer": (frozenset({Status.PENDING}), Status.ASSIGNED),
    "accept": (frozenset({Status.ASSIGNED}), Status.ACCEPTED),
    "decline": (frozenset({Status.ASSIGNED}), Status.PENDING),
    "lapse": (frozenset({Status.ASSIGNED}), Status.PENDING),
    "arrive": (frozenset({Status.ACCEPTED}), Status.ARRIVED),
    "start": (_BEFORE_PICKUP, Status.IN_PROGRESS),
    "complete": (frozenset({Status.IN_PROGRESS}), Status.COMPLETED),
    "no_show": (frozenset({Status.ARRIVED}), Status.NO_SHOW),
    "driver_cancel": (_BEFORE_PICKUP, Status.PENDING),
    "rematch": (_BEFORE_PICKUP, Status.PENDING),
    "cancel": (_OPEN - {Status.IN_PROGRESS}, Status.CANCELLED),
    "force_cancel": (_OPEN, Status.CANCELLED),
    "force_complete": (frozenset({Status.IN_PROGRESS}), Status.COMPLETED),
    "expire": (frozenset({Status.PENDING}), Status.EXPIRED),
}

# Who may cause each action: the roles, and None for the system (beat, the matcher).
CAUSED_BY: dict[str, frozenset[Role | None]] = {
    "offer": frozenset({None}),
    "accept": frozenset({Role.DRIVER}),
    "decline": frozenset({Role.DRIVER}),
    "lapse": frozenset({None}),
    "arrive": frozenset({Role.DRIVER}),
    "start": frozenset({Role.DRIVER}),
    "complete": frozenset({Role.DRIVER}),
    "no_show": frozenset({Role.DRIVER}),
    "driver_cancel": frozenset({Role.DRIVER}),
    "rematch": frozenset({None}),
    "cancel": frozenset({Role.RIDER, Role.ADMIN, None}),
    "force_cancel": frozenset({Role.ADMIN}),
    "force_complete": frozenset({Role.ADMIN}),
    "expire": frozenset({None}),
}

# The actions a booking's driver takes on its own endpoint (POST /v1/bookings/<id>/<action>).
DRIVER_ACTIONS = ("accept", "decline", "arrive", "start", "complete")
# What a driver may send over the relay: those, a no-show and a cancel (with its reason).
RELAY_DRIVER_ACTIONS = (*DRIVER_ACTIONS, "no_show", "cancel")

# What beat does with a ride accepted but never started, region by region.
STUCK_RIDE_ACTIONS = ("rematch", "cancel")


def next_status(action: str, current: Status | str) -> Status | None:
    """The status ``action`` leads to from ``current``, or None if it is not allowed."""
    sources, target = TRANSITIONS[action]
    return target if Status(current) in sources else None
