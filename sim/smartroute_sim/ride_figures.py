"""A simulated city's ride figures: quotes, bookings on them, fares, riders' and drivers'
cancellations, no-shows and their fees, arrivals and ratings. ``figures`` gives them one
shape, whether counted by the run as its clients acted or read from the database at the end
(``ride_figures_sql``), so the two can be compared as they are.
"""

from __future__ import annotations

import threading
from collections import Counter

from sqlalchemy import Connection, text


class RideTally:
    """What a run's clients did that a counter alone does not hold: fares, fees and stars,
    summed as the answers come (from every client thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sums: Counter[str] = Counter()
        self.currencies: set[str] = set()

    def fare(self, fare: dict | None) -> None:
        """A completed ride's fare as its answer gave it (final once settled)."""
        if fare and fare.get("final"):
            with self.lock:
                self.sums["fares"] += 1
                self.sums["fare_total"] += fare["amount"]
                self.currencies.add(fare["currency"])

    def fee(self, kind: str, fee: int | None) -> None:
        """A rider's cancellation (``kind`` "rider_cancellation") or a no-show's fee."""
        if fee:
            with self.lock:
                self.sums[f"{kind}_fees"] += 1
                self.sums[f"{kind}_fee_total"] += fee

    def rating(self, side: str, stars: int, comment: str | None) -> None:
        with self.lock:
            self.sums[f"ratings_by_{side}"] += 1
            self.sums[f"stars_by_{side}"] += stars
            self.sums[f"comments_by_{side}"] += comment is not None

    def figures(self, counts: Counter[str]) -> dict:
        """The figures (``figures``), with the run's event ``counts``."""
        with self.lock:
            sums, currencies = Counter(self.sums), sorted(self.currencies)
        return figures(
            quotes=counts["quotes"],
            bookings_with_quote=counts["booked_on_quote"],
            fares=(sums["fares"], sums["fare_total"], currencies),
            rider_cancellations=(
                counts["rider_cancellations"],
                sums["rider_cancellation_fees"],
                sums["rider_cancellation_fee_total"],
            ),
            driver_cancellations=counts["driver_cancellations"],
            no_shows=(counts["no_shows"], sums["no_show_fees"], sums["no_show_fee_total"]),
            arrivals=counts["arrived"],
            ratings={
                side: (
                    sums[f"ratings_by_{side}"],
                    sums[f"comments_by_{side}"],
                    sums[f"stars_by_{side}"],
                )
                for side in ("rider", "driver")
            },
        )


def figures(
    *,
    quotes: int,
    bookings_with_quote: int,
    fares: tuple[int, int, list[str]],
    rider_cancellations: tuple[int, int, int],
    driver_cancellations: int,
    no_shows: tuple[int, int, int],
    arrivals: int,
    ratings: dict[str, tuple[int, int, int]],
) -> dict:
    """The ride figures of a run, one shape for what the run did and what the database has.
    Amounts are in the currency's minor units; ``ratings`` is (how many, how many with a
    comment, stars in all) by side."""
    fare_count, fare_total, currencies = fares
    return {
        "quotes": quotes,
        "bookings_with_quote": bookings_with_quote,
        "fares": {
            "count": fare_count,
            "total": fare_total,
            "mean": round(fare_total / fare_count, 2) if fare_count else None,
            "currency": ",".join(currencies) or None,
        },
        "rider_cancellations": dict(
            zip(("count", "fees_charged", "fee_total"), rider_cancellations, strict=True)
        ),
        "driver_cancellations": driver_cancellations,
        "no_shows": dict(zip(("count", "fees_charged", "fee_total"), no_shows, strict=True)),
        "arrivals": arrivals,
        "ratings": {
            side: {
                "count": n,
                "with_comment": comments,
                "mean_stars": round(stars / n, 2) if n else None,
            }
            for side, (n, comments, stars) in ratings.items()
        },
    }


# A booking priced on its rider's quote was quoted in an earlier transaction; one priced
# when booked has its quote made in the booking's own (same now() as its first event).
QUOTED_SQL = """
SELECT b.id, q.created_at < (SELECT min(e.created_at) FROM booking_events e
                              WHERE e.booking_id = b.id) AS on_rider_quote
  FROM cab_bookings b JOIN quotes q ON q.id = b.quote_id
 WHERE b.user_id = ANY(:riders)
"""
FEES_SQL = """
SELECT count(*), count(*) FILTER (WHERE cancellation_fee > 0), coalesce(sum(cancellation_fee), 0)
  FROM cab_bookings WHERE id = ANY(:ids) AND status = :status AND (:status <> 'cancelled'
   OR cancelled_by = 'rider')
"""


def ride_figures_sql(conn: Connection, ids: list[int], rider_ids: list[int]) -> dict:
    """The ride figures (``figures``) of bookings ``ids`` by riders ``rider_ids``, from the
    database: quotes the riders asked for, bookings on them, final fares, riders'
    cancellations and no-shows with their fees, drivers' cancellations (their never-again
    rows), arrivals (the audit trail) and ratings."""

    def one(sql: str, **params) -> tuple:
        return tuple(conn.execute(text(sql), {"ids": ids, **params}).one())

    quoted = dict(conn.execute(text(QUOTED_SQL), {"riders": rider_ids}).all())
    all_quotes = conn.scalar(
        text("SELECT count(*) FROM quotes WHERE user_id = ANY(:riders)"), {"riders": rider_ids}
    )
    fare_count, fare_total = one(
        "SELECT count(final_fare), coalesce(sum(final_fare), 0) FROM cab_bookings"
        " WHERE id = ANY(:ids) AND status = 'completed'"
    )
    currencies = conn.scalars(
        text(
            "SELECT DISTINCT fare_currency FROM cab_bookings WHERE id = ANY(:ids)"
            " AND status = 'completed' AND final_fare IS NOT NULL ORDER BY 1"
        ),
        {"ids": ids},
    ).all()
    ratings = {
        role: (n, comments, int(stars))
        for role, n, comments, stars in conn.execute(
            text(
                "SELECT rater_role, count(*), count(comment), sum(stars) FROM ratings"
                " WHERE booking_id = ANY(:ids) GROUP BY rater_role"
            ),
            {"ids": ids},
        ).all()
    }
    return figures(
        quotes=all_quotes - sum(1 for on_quote in quoted.values() if not on_quote),
        bookings_with_quote=sum(1 for i in ids if quoted.get(i)),
        fares=(fare_count, int(fare_total), list(currencies)),
        rider_cancellations=tuple(map(int, one(FEES_SQL, status="cancelled"))),
        driver_cancellations=one(
            "SELECT count(*) FROM booking_declines WHERE booking_id = ANY(:ids)"
            " AND reason = 'cancelled'"
        )[0],
        no_shows=tuple(map(int, one(FEES_SQL, status="no_show"))),
        arrivals=one(
            "SELECT count(*) FROM booking_events WHERE booking_id = ANY(:ids)"
            " AND to_status = 'arrived'"
        )[0],
        ratings={side: ratings.get(side, (0, 0, 0)) for side in ("rider", "driver")},
    )
