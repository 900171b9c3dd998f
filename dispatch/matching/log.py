"""The dispatch log: for each matching attempt, who was considered and why each was or was
not chosen, so an operator can answer "why did this rider wait?"."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from dispatch.matching.policy import Outcome
from dispatch.models import Booking, DispatchLogEntry

OFFERED = "offered"
CLAIM_LOST = "taken by another booking or offline when claimed"


class DispatchLog:
    """Collects one attempt's entries; ``flush`` writes them all in the attempt's own
    transaction, one INSERT for the whole batch."""

    def __init__(
        self, session: Session, matcher: str, now: dt.datetime, window_s: float | None = None
    ) -> None:
        self.session, self.matcher, self.now = session, matcher, now
        self.window_s = window_s
        self.batch_id = str(uuid.uuid4())
        self.rows: list[dict[str, Any]] = []

    @staticmethod
    def candidate(
        driver_id: int,
        distance_km: float | None,
        *,
        eta_s: float | None = None,
        chosen: bool = False,
        reason: str,
    ) -> dict[str, Any]:
        return {
            "driver_id": driver_id,
            "distance_km": None if distance_km is None else round(distance_km, 3),
            "eta_s": None if eta_s is None else round(eta_s, 1),
            "chosen": chosen,
            "reason": reason,
        }

    def record(
        self,
        booking: Booking,
        outcome: Outcome,
        radius_km: float,
        batch_size: int,
        candidates: list[dict[str, Any]],
        excluded: dict[str, Any] | None = None,
    ) -> None:
        chosen = next((c for c in candidates if c["chosen"]), None)
        self.rows.append(
            dict(
                booking_id=booking.id,
                batch_id=self.batch_id,
                matcher=self.matcher,
                outcome=str(outcome),
                driver_id=chosen["driver_id"] if chosen else None,
                eta_s=chosen["eta_s"] if chosen else None,
                radius_km=radius_km,
                batch_size=batch_size,
                window_s=self.window_s,
                candidates=candidates,
                excluded=excluded or {},
                created_at=self.now,
            )
        )

    def flush(self) -> None:
        if self.rows:
            self.session.execute(insert(DispatchLogEntry), self.rows)
            self.rows = []


def entries_for(session: Session, booking_id: int) -> list[dict[str, Any]]:
    """A booking's dispatch log, oldest attempt first."""
    rows = session.execute(
        select(DispatchLogEntry)
        .where(DispatchLogEntry.booking_id == booking_id)
        .order_by(DispatchLogEntry.id)
    ).scalars()
    return [
        {
            "batch_id": r.batch_id,
            "matcher": r.matcher,
            "outcome": r.outcome,
            "driver_id": r.driver_id,
            "eta_s": r.eta_s,
            "radius_km": r.radius_km,
            "batch_size": r.batch_size,
            "window_s": r.window_s,
            "candidates": r.candidates,
            "excluded": r.excluded,
            "at": r.created_at.isoformat(),
        }
        for r in rows
    ]
