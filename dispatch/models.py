"""The tables of SmartRoute, with the invariants the database enforces.

The database has the last word on what may exist together: a driver holds at
most one active booking (a partial unique index), coordinates are in range and
statuses are from the state machine (CHECKs), an idempotency key is unique per
user. Code checks the same things earlier, for clearer errors.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Sequence,
    SmallInteger,
    String,
    Text,
    Time,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dispatch.states import (
    ACTIVE_STATUSES,
    BOOKING_STATUSES,
    DRIVER_STATUSES,
    ROLES,
    UNSTARTED_STATUSES,
)

# Constraint names are derived, so Alembic can drop and alter them by name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


# Who cancelled a booking (the system: beat, for a ride never started).
CANCELLERS = ("rider", "admin", "system")
# Why a driver is never offered a booking again.
DECLINE_REASONS = ("declined", "timeout", "cancelled", "stuck")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


Timestamp = DateTime(timezone=True)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())

    __table_args__ = (
        CheckConstraint(_in("role", ROLES), name="role"),
        Index("ix_users_role", "role"),
    )


class AccessToken(Base):
    """One bearer token a user holds. The row is what makes a token revocable.

    Issued tokens are signed and carry their expiry (``dispatch/tokens.py``); the only
    token without an expiry is the operator's bootstrap admin token.
    """

    __tablename__ = "access_tokens"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    # SHA-256 of the token: a stolen database dump holds no usable token.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    issued_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    expires_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    # When the holder first signed in: a refresh carries it over to the new token, so a
    # stolen token cannot be refreshed past the family's maximum lifetime.
    session_started_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())

    __table_args__ = (
        CheckConstraint("expires_at IS NULL OR expires_at > issued_at", name="expires_after_issue"),
        CheckConstraint(
            "revoked_at IS NULL OR revoked_at >= issued_at", name="revoked_after_issue"
        ),
        # The prune task's scans (dispatch/retention.py): long-expired and long-revoked rows.
        Index("ix_access_tokens_expires_at", "expires_at"),
        Index(
            "ix_access_tokens_revoked_at",
            "revoked_at",
            postgresql_where=text("revoked_at IS NOT NULL"),
        ),
        CheckConstraint("session_started_at <= issued_at", name="session_started_before_issue"),
    )


class Driver(Base):
    """A driver's live state; one row per user whose role is driver."""

    __tablename__ = "drivers"

    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    status: Mapped[str] = mapped_column(String(16), server_default="offline")
    lat: Mapped[float | None] = mapped_column(Double)
    lng: Mapped[float | None] = mapped_column(Double)
    last_seen_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    # When the driver last became available: the longest-idle driver is preferred among equals.
    available_since: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())

    __table_args__ = (
        CheckConstraint(_in("status", DRIVER_STATUSES), name="status"),
        CheckConstraint("lat IS NULL OR lat BETWEEN -90 AND 90", name="lat_range"),
        CheckConstraint("lng IS NULL OR lng BETWEEN -180 AND 180", name="lng_range"),
        CheckConstraint("(lat IS NULL) = (lng IS NULL)", name="location_complete"),
        Index("ix_drivers_status_lat", "status", "lat"),
    )


class Booking(Base):
    __tablename__ = "cab_bookings"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"))
    driver_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("drivers.user_id"))
    pickup_lat: Mapped[float] = mapped_column(Double)
    pickup_lng: Mapped[float] = mapped_column(Double)
    dropoff_lat: Mapped[float] = mapped_column(Double)
    dropoff_lng: Mapped[float] = mapped_column(Double)
    # The requested pickup, in UTC, as a date and a time (listings filter on the date).
    date: Mapped[dt.date] = mapped_column(Date)
    time: Mapped[dt.time] = mapped_column(Time)
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    region: Mapped[str] = mapped_column(String(32), server_default="default")
    # Timers live in rows, swept by beat: when the current offer lapses, when the booking
    # may next be tried, and when it expires if still unmatched.
    offer_expires_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    expires_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    match_attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    assigned_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    # Price (dispatch/fares.py, dispatch/quotes.py): the quote the booking was priced on,
    # the price it locked, the final fare once completed (minor units), and the breakdown
    # clients see (the quote's until completion, then the final one).
    quote_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("quotes.id"))
    fare_currency: Mapped[str | None] = mapped_column(String(3))
    quoted_fare: Mapped[int | None] = mapped_column(Integer)
    final_fare: Mapped[int | None] = mapped_column(Integer)
    fare: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # Arrival, cancellations, no-shows and stuck rides. When the current driver accepted,
    # reached the pickup and started the ride (cleared when the booking goes back to
    # matching); who cancelled it and why; the fee a cancellation or no-show carries, in
    # the currency's minor units (NULL: none); when beat flagged a ride running too long.
    accepted_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    arrived_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    started_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    cancelled_by: Mapped[str | None] = mapped_column(String(16))
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    cancellation_fee: Mapped[int | None] = mapped_column(BigInteger)
    overrun_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)

    __table_args__ = (
        CheckConstraint(_in("status", BOOKING_STATUSES), name="status"),
        CheckConstraint("status <> 'arrived' OR arrived_at IS NOT NULL", name="arrival_time"),
        CheckConstraint(
            "(status = 'cancelled') = (cancelled_by IS NOT NULL)",
            name="cancelled_by_when_cancelled",
        ),
        CheckConstraint(_in("cancelled_by", CANCELLERS), name="canceller"),
        CheckConstraint("cancellation_fee >= 0", name="cancellation_fee_not_negative"),
        CheckConstraint("pickup_lat BETWEEN -90 AND 90", name="pickup_lat_range"),
        CheckConstraint("pickup_lng BETWEEN -180 AND 180", name="pickup_lng_range"),
        CheckConstraint("dropoff_lat BETWEEN -90 AND 90", name="dropoff_lat_range"),
        CheckConstraint("dropoff_lng BETWEEN -180 AND 180", name="dropoff_lng_range"),
        CheckConstraint(
            "driver_id IS NOT NULL OR status IN ('pending', 'cancelled', 'expired')",
            name="driver_when_matched",
        ),
        CheckConstraint(
            "(status = 'assigned') = (offer_expires_at IS NOT NULL)", name="offer_timer"
        ),
        CheckConstraint("version >= 1", name="version_positive"),
        # A driver holds at most one active booking: the guarantee, not just a check.
        Index(
            "uq_cab_bookings_active_driver",
            "driver_id",
            unique=True,
            postgresql_where=text(_in("status", ACTIVE_STATUSES)),
        ),
        Index("ix_cab_bookings_status_date", "status", "date"),
        Index("ix_cab_bookings_status_created_at", "status", "created_at"),
        Index("ix_cab_bookings_date_time", "date", "time"),
        # The sweepers' scans: due pending bookings and lapsed offers.
        Index(
            "ix_cab_bookings_pending_next_attempt",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
        # A region's batch: its pending bookings, oldest first.
        Index(
            "ix_cab_bookings_pending_region",
            "region",
            "created_at",
            postgresql_where=text("status = 'pending'"),
        ),
        Index(
            "ix_cab_bookings_assigned_offer_expiry",
            "offer_expires_at",
            postgresql_where=text("status = 'assigned'"),
        ),
        # Price: a quote prices one booking at most; a priced booking has all its terms;
        # amounts are never negative; only a completed ride has a final fare.
        Index(
            "uq_cab_bookings_quote_id",
            "quote_id",
            unique=True,
            postgresql_where=text("quote_id IS NOT NULL"),
        ),
        CheckConstraint(
            "(quote_id IS NULL) = (quoted_fare IS NULL) "
            "AND (quote_id IS NULL) = (fare_currency IS NULL) "
            "AND (quote_id IS NULL) = (fare IS NULL)",
            name="fare_terms",
        ),
        CheckConstraint("quoted_fare >= 0", name="quoted_fare_positive"),
        CheckConstraint(
            "final_fare IS NULL OR (final_fare >= 0 AND status = 'completed' "
            "AND quoted_fare IS NOT NULL)",
            name="final_fare_when_completed",
        ),
        # The stuck-ride sweep's scans: rides accepted but not started, rides under way.
        Index(
            "ix_cab_bookings_unstarted_accepted_at",
            "accepted_at",
            postgresql_where=text(_in("status", UNSTARTED_STATUSES)),
        ),
        Index(
            "ix_cab_bookings_in_progress_started_at",
            "started_at",
            postgresql_where=text("status = 'in_progress'"),
        ),
    )


class Decline(Base):
    """A driver who declined or let lapse an offer of a booking, cancelled it before pickup,
    or held it unstarted until beat took it back: never offered it again."""

    __tablename__ = "booking_declines"

    booking_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("cab_bookings.id", ondelete="CASCADE"), primary_key=True
    )
    driver_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("drivers.user_id", ondelete="CASCADE"), primary_key=True
    )
    reason: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())

    __table_args__ = (CheckConstraint(_in("reason", DECLINE_REASONS), name="reason"),)


class BookingEvent(Base):
    """The audit trail: one row per status change, written in the change's transaction."""

    __tablename__ = "booking_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    booking_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("cab_bookings.id", ondelete="CASCADE")
    )
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    driver_id: Mapped[int | None] = mapped_column(BigInteger)
    actor_id: Mapped[int | None] = mapped_column(BigInteger)
    reason: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())

    __table_args__ = (
        Index("ix_booking_events_booking_id", "booking_id"),
        UniqueConstraint("booking_id", "version", name="uq_booking_events_booking_version"),
    )


class IdempotencyKey(Base):
    """A rider's Idempotency-Key and the booking it created: a retry gets that booking back."""

    __tablename__ = "idempotency_keys"

    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # SHA-256 of the canonical request body: the same key with another body is refused.
    request_hash: Mapped[str] = mapped_column(String(64))
    booking_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("cab_bookings.id", ondelete="CASCADE")
    )
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())

    # The prune task takes the oldest keys first (dispatch/retention.py).
    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)


class DispatchLogEntry(Base):
    """Why a booking went to the driver it did: one row per matching attempt."""

    __tablename__ = "dispatch_log"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    booking_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("cab_bookings.id", ondelete="CASCADE")
    )
    # The batch this attempt was solved in (shared by every booking of that batch).
    batch_id: Mapped[str] = mapped_column(String(36))
    matcher: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(16))
    driver_id: Mapped[int | None] = mapped_column(BigInteger)
    eta_s: Mapped[float | None] = mapped_column(Double)
    radius_km: Mapped[float] = mapped_column(Double)
    batch_size: Mapped[int] = mapped_column(Integer)
    # How long the batch waited to gather its bookings (dispatch.matching.window); None
    # for a booking matched on its own, or a batch asked for at once.
    window_s: Mapped[float | None] = mapped_column(Double)
    # [{driver_id, eta_s, distance_km, chosen, reason}], nearest first.
    candidates: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    excluded: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())

    __table_args__ = (Index("ix_dispatch_log_booking_id", "booking_id"),)


# Positions are taken by the publisher alone, never at INSERT (dispatch/outbox.py).
OUTBOX_POSITIONS = Sequence("outbox_event_positions", metadata=Base.metadata)


class OutboxEvent(Base):
    """A push to deliver, written in the transaction of the change it announces.

    The publisher gives committed rows a ``position`` and commits it, then sends them in
    position order and deletes them: the table holds only what is still to be sent. The
    position is the ``event_id`` clients see, so a reconnecting client can ask for what
    came after (from the room's replay stream in Redis, dispatch/outbox.py).
    """

    __tablename__ = "outbox_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    room: Mapped[str] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(32))
    booking_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("cab_bookings.id", ondelete="CASCADE")
    )
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    # The order of publication; NULL until the publisher reaches the row.
    position: Mapped[int | None] = mapped_column(BigInteger, unique=True)

    __table_args__ = (
        # The publisher's two queues, each read in its index's order (dispatch.outbox): rows
        # without a position by id here, rows with one by the unique index on position.
        Index("ix_outbox_events_unpositioned", "id", postgresql_where=text("position IS NULL")),
        Index("ix_outbox_events_booking_id", "booking_id"),
    )


# Ride history and ratings: the indexes that serve a party's history and the admin search,
# newest first by (created_at, id), and the ratings each party gives the other.

Index("ix_cab_bookings_user_history", Booking.user_id, Booking.created_at, Booking.id)
Index("ix_cab_bookings_driver_history", Booking.driver_id, Booking.created_at, Booking.id)
Index("ix_cab_bookings_region_history", Booking.region, Booking.created_at, Booking.id)
Index("ix_cab_bookings_created_at_id", Booking.created_at, Booking.id)

RATER_ROLES = ("rider", "driver")
MAX_RATING_COMMENT_LENGTH = 500


class Rating(Base):
    """One party's rating of the other after a completed ride: the rider rates the driver,
    the driver rates the rider, each at most once per booking (a unique constraint)."""

    __tablename__ = "ratings"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    booking_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("cab_bookings.id", ondelete="CASCADE")
    )
    rater_role: Mapped[str] = mapped_column(String(16))
    rater_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"))
    ratee_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"))
    stars: Mapped[int] = mapped_column(SmallInteger)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())

    __table_args__ = (
        UniqueConstraint("booking_id", "rater_role", name="uq_ratings_booking_rater_role"),
        CheckConstraint(_in("rater_role", RATER_ROLES), name="rater_role"),
        CheckConstraint("stars BETWEEN 1 AND 5", name="stars_range"),
        CheckConstraint(
            f"comment IS NULL OR char_length(comment) <= {MAX_RATING_COMMENT_LENGTH}",
            name="comment_length",
        ),
        CheckConstraint("rater_id <> ratee_id", name="not_self"),
        Index("ix_ratings_ratee_id", "ratee_id", "created_at"),
    )


class RatingSummary(Base):
    """A user's ratings received, as a count and a sum of stars, kept in the transaction
    that adds each rating, so an average is one primary-key read."""

    __tablename__ = "rating_summaries"

    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    ratings: Mapped[int] = mapped_column(Integer)
    stars_total: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        CheckConstraint("ratings >= 1", name="ratings_positive"),
        CheckConstraint("stars_total BETWEEN ratings AND 5 * ratings", name="stars_total_range"),
    )


class Quote(Base):
    """A price offered to a rider for a trip, valid until ``expires_at``.

    It keeps the tariff it was priced under (rates and fees), so the booking it prices is
    settled, and charged any fee, on the terms the rider saw, whatever the configuration
    says later. A booking that names it (``cab_bookings.quote_id``, unique) has used it.
    """

    __tablename__ = "quotes"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    region: Mapped[str] = mapped_column(String(32))
    pickup_lat: Mapped[float] = mapped_column(Double)
    pickup_lng: Mapped[float] = mapped_column(Double)
    dropoff_lat: Mapped[float] = mapped_column(Double)
    dropoff_lng: Mapped[float] = mapped_column(Double)
    pickup_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    # The tariff, in minor units of currency.
    currency: Mapped[str] = mapped_column(String(3))
    base: Mapped[int] = mapped_column(Integer)
    per_km: Mapped[int] = mapped_column(Integer)
    per_minute: Mapped[int] = mapped_column(Integer)
    minimum: Mapped[int] = mapped_column(Integer)
    cancellation_fee: Mapped[int] = mapped_column(Integer)
    no_show_fee: Mapped[int] = mapped_column(Integer)
    # The estimate and the price: 100 is no surge.
    surge_pct: Mapped[int] = mapped_column(Integer)
    distance_m: Mapped[int] = mapped_column(Integer)
    duration_s: Mapped[int] = mapped_column(Integer)
    distance_amount: Mapped[int] = mapped_column(Integer)
    time_amount: Mapped[int] = mapped_column(Integer)
    amount: Mapped[int] = mapped_column(Integer)
    pickup_eta_s: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    expires_at: Mapped[dt.datetime] = mapped_column(Timestamp)

    __table_args__ = (
        CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency"),
        CheckConstraint(
            "base >= 0 AND per_km >= 0 AND per_minute >= 0 AND minimum >= 0 "
            "AND cancellation_fee >= 0 AND no_show_fee >= 0",
            name="tariff_positive",
        ),
        CheckConstraint(
            "distance_m >= 0 AND duration_s >= 0 AND distance_amount >= 0 "
            "AND time_amount >= 0 AND amount >= 0",
            name="estimate_positive",
        ),
        CheckConstraint("surge_pct >= 100", name="surge_at_least_one"),
        CheckConstraint("expires_at > created_at", name="expires_after_creation"),
        CheckConstraint("pickup_lat BETWEEN -90 AND 90", name="pickup_lat_range"),
        CheckConstraint("pickup_lng BETWEEN -180 AND 180", name="pickup_lng_range"),
        CheckConstraint("dropoff_lat BETWEEN -90 AND 90", name="dropoff_lat_range"),
        CheckConstraint("dropoff_lng BETWEEN -180 AND 180", name="dropoff_lng_range"),
        Index("ix_quotes_user_id", "user_id"),
        Index("ix_quotes_expires_at", "expires_at"),
    )


class SurgeLevel(Base):
    """A region's surge multiplier as beat last computed it, with the demand and supply
    it came from (dispatch/surge.py)."""

    __tablename__ = "surge_levels"

    region: Mapped[str] = mapped_column(String(32), primary_key=True)
    multiplier_pct: Mapped[int] = mapped_column(Integer)
    demand: Mapped[int] = mapped_column(Integer)
    supply: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())

    __table_args__ = (
        CheckConstraint("multiplier_pct >= 100", name="multiplier_at_least_one"),
        CheckConstraint("demand >= 0 AND supply >= 0", name="counts_positive"),
    )
