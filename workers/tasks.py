"""Thin tasks: take ids, open a transaction, call one dispatch service, enqueue what follows.

Every task is idempotent: it re-reads the rows and does nothing if the work is done,
so a redelivered or duplicated message is harmless.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from celery import shared_task
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from dispatch import rebalancing, retention, surge, sweeps
from dispatch.db import transaction_now
from dispatch.matching import batch as batches
from dispatch.matching.nearest import dispatch_booking
from dispatch.matching.policy import Outcome
from dispatch.matching.window import Pressure
from dispatch.models import Booking
from dispatch.stats import booking_stats
from smartroute.infra import heartbeat, reposition, snapshots
from smartroute.infra.driver_index import best_effort
from smartroute.infra.enqueue import (
    ask_to_publish_again,
    asked_to_publish_again,
    batch_window,
    publish_finished,
    request_dispatch,
    request_publish,
    set_batch_window,
)
from smartroute.infra.metrics import (
    ASSIGN_LATENCY,
    BATCH_WINDOW,
    MATCH_OUTCOMES,
    PUSHES,
    REPOSITION_SUGGESTIONS,
    STUCK_RIDES,
)
from smartroute.infra.queues import queue_depths
from workers import telemetry  # noqa: F401 - connects the task metrics signals
from workers.context import (
    cache,
    cost_model,
    driver_index,
    match_policy,
    publisher,
    reader,
    sessions,
    settings,
)

log = logging.getLogger(__name__)

OUTBOX_BATCH = 500

# A database restart or a full pool is worth retrying; anything else is a bug to see.
TRANSIENT = (OperationalError,)
RETRY = {
    "autoretry_for": TRANSIENT,
    "retry_backoff": True,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": 5,
}


def _now() -> dt.datetime:
    """This host's clock: for metrics and logs only. Whatever a task decides by time (an offer
    lapsing, a booking expiring, a driver gone silent), the domain decides by the database's
    clock, read inside the task's transaction (``dispatch.db.transaction_now``): one clock for
    every process, which neither a skewed host nor a pause before the transaction moves."""
    return dt.datetime.now(dt.UTC)


@shared_task(name="workers.tasks.match_booking", acks_late=True, **RETRY)
def match_booking(booking_id: int) -> str:
    """Offer a pending booking to the nearest available driver, once."""
    with sessions()() as session, session.begin():
        result = dispatch_booking(session, booking_id, match_policy())
        assigned = result.outcome == Outcome.ASSIGNED
        created_at = session.get_one(Booking, booking_id).created_at if assigned else None
    MATCH_OUTCOMES.labels(result.outcome.value).inc()
    if result.outcome in (Outcome.ASSIGNED, Outcome.EXPIRED):
        request_publish(match_booking.app, cache())
    if created_at is not None:  # Assigned.
        ASSIGN_LATENCY.observe((_now() - created_at).total_seconds())
        log.info(
            "booking assigned",
            extra={
                "booking_id": booking_id,
                "driver_id": result.driver_id,
                "distance_km": round(result.distance_km or 0, 3),
            },
        )
    return result.outcome.value


@shared_task(name="workers.tasks.dispatch_region", acks_late=True, **RETRY)
def dispatch_region(
    region: str, window_s: float | None = None, due_at: float | None = None
) -> dict:
    """Match a batch of the region's waiting bookings as one assignment problem, then set
    the window the region's next batch waits (dispatch.matching.window) from what this
    one met. ``window_s`` is how long this batch waited to gather its bookings, and
    ``due_at`` when it was meant to start (a worker starting late means workers are behind)."""
    started = _now()  # For the latency metric only: the batch decides by the database's clock.
    late_s = max(0.0, time.time() - due_at) if due_at is not None else 0.0
    with sessions()() as session, session.begin():
        outcome = batches.dispatch_region(
            session,
            region,
            match_policy(),
            cost_model(),
            limit=settings().batch_limit,
            locator=driver_index(),
            window_s=window_s,
        )
    run_s = (_now() - started).total_seconds()
    for waited_s in outcome.waited_s:
        ASSIGN_LATENCY.observe(waited_s + run_s)
    MATCH_OUTCOMES.labels("assigned").inc(len(outcome.offered))
    MATCH_OUTCOMES.labels("no_driver").inc(len(outcome.unmatched))
    MATCH_OUTCOMES.labels("claim_lost").inc(len(outcome.lost))
    MATCH_OUTCOMES.labels("expired").inc(len(outcome.expired))
    adaptive = _adapt_window(region, outcome, run_s + late_s) is not None
    if outcome.offered or outcome.expired:
        request_publish(dispatch_region.app, cache())
    if outcome.full or (outcome.lost and not adaptive):
        _request(region, now=True)
    elif outcome.lost or outcome.left_waiting:
        # After a window: whoever holds them may have let go by then, and drivers may have
        # come free. A claim lost to a concurrent batch grew the window, and the next batch
        # gathers these with the rest instead of racing that batch again at once.
        _request(region)
    if outcome.offered or outcome.lost:
        log.info(
            "batch dispatched",
            extra={
                "region": region,
                "batch_id": outcome.batch_id,
                "window_s": window_s,
                "offered": len(outcome.offered),
                "lost": len(outcome.lost),
                "unmatched": len(outcome.unmatched),
            },
        )
    return {
        "offered": len(outcome.offered),
        "unmatched": len(outcome.unmatched),
        "lost": len(outcome.lost),
        "expired": len(outcome.expired),
    }


def _adapt_window(region: str, outcome: batches.BatchReport, busy_s: float) -> float | None:
    """Set the region's next window from the pressure this batch met, and return it (None
    with a fixed window). It moves from the region's window as it stands now, not from the
    one this batch waited: batches queued behind a busy worker carry windows long gone."""
    policy = settings().batch_window
    if not policy.adaptive:
        return None
    current = batch_window(cache(), region)
    current = policy.min_s if current is None else policy.clamp(current)
    pressure = Pressure(
        bookings=len(outcome.offered) + len(outcome.unmatched) + len(outcome.lost),
        free_drivers=outcome.free_drivers,
        lost=len(outcome.lost),
        full=outcome.full,
        run_s=busy_s,
    )
    next_s = policy.next_window_s(current, pressure)
    BATCH_WINDOW.labels(region).set(next_s)
    if next_s != current:
        set_batch_window(cache(), region, next_s)
    return next_s


def _request(region: str, booking_id: int | None = None, *, now: bool = False) -> None:
    request_dispatch(
        dispatch_region.app, cache(), region, settings().batch_window, booking_id, now=now
    )


def _enqueue_matches(session_factory, booking_ids: list[int]) -> None:
    """Ask for these (committed, pending) bookings to be matched: by booking or by region."""
    if not booking_ids:
        return
    with session_factory() as session:
        regions = session.execute(
            select(Booking.id, Booking.region).where(Booking.id.in_(booking_ids))
        ).all()
    if settings().batch_window.max_s > 0:
        for region in sorted({r for _, r in regions}):
            _request(region, now=True)
    else:
        for booking_id, region in regions:
            _request(region, booking_id)


@shared_task(name="workers.tasks.lapse_offers", acks_late=True, **RETRY)
def lapse_offers() -> int:
    """Offers past their window go back to pending and on to another driver."""
    with sessions()() as session, session.begin():
        lapsed = sweeps.lapse_offers(session)
    if lapsed:
        request_publish(lapse_offers.app, cache())
    _enqueue_matches(sessions(), lapsed)
    return len(lapsed)


@shared_task(name="workers.tasks.redispatch_pending", acks_late=True, **RETRY)
def redispatch_pending() -> int:
    """Pending bookings due another try are asked for again (a lost message loses
    nothing): in batches, each region with one due gets a batch after its window
    (coalesced with any already coming); one by one, each due booking is sent again.
    How many regions or bookings were asked for."""
    if settings().batch_window.max_s > 0:
        with sessions()() as session, session.begin():
            regions = sweeps.regions_due(session, match_policy())
        for region in regions:
            _request(region)
        return len(regions)
    with sessions()() as session, session.begin():
        due = sweeps.claim_due(session, retry_interval_s=settings().retry_interval_s)
    _enqueue_matches(sessions(), due)
    return len(due)


@shared_task(name="workers.tasks.expire_bookings", acks_late=True, **RETRY)
def expire_bookings() -> int:
    """Pending bookings past their deadline become expired."""
    with sessions()() as session, session.begin():
        expired = sweeps.expire_overdue(session)
    if expired:
        request_publish(expire_bookings.app, cache())
    return len(expired)


@shared_task(name="workers.tasks.recover_stuck_rides", acks_late=True, **RETRY)
def recover_stuck_rides() -> dict:
    """Rides accepted and never started are matched again or cancelled, by their region's
    policy; rides in progress past their maximum are flagged (the API's scrape counts them:
    ``smartroute_overrunning_rides``)."""
    config = settings()
    with sessions()() as session, session.begin():
        stuck = sweeps.recover_stuck_rides(
            session,
            start_timeout_s=config.start_timeout_s,
            action_for=config.stuck_ride_action,
            deadline_s=config.dispatch_deadline_s,
        )
        flagged = sweeps.flag_overrunning_rides(session, max_ride_s=config.max_ride_s)
    STUCK_RIDES.labels("rematched").inc(len(stuck.rematched))
    STUCK_RIDES.labels("cancelled").inc(len(stuck.cancelled))
    if stuck.rematched or stuck.cancelled:
        request_publish(recover_stuck_rides.app, cache())
        log.warning(
            "stuck rides taken from their drivers",
            extra={"rematched": stuck.rematched, "cancelled": stuck.cancelled},
        )
    if flagged:
        log.warning("rides running past their maximum", extra={"booking_ids": flagged})
    _enqueue_matches(sessions(), stuck.rematched)
    return {
        "rematched": len(stuck.rematched),
        "cancelled": len(stuck.cancelled),
        "flagged": len(flagged),
    }


@shared_task(name="workers.tasks.mark_drivers_offline", acks_late=True, **RETRY)
def mark_drivers_offline(stale_after_s: int) -> int:
    """Available drivers with no location ping for ``stale_after_s`` go offline, and every
    driver silent that long leaves the location index."""
    with sessions()() as session, session.begin():
        silent = sweeps.mark_silent_drivers_offline(session, stale_after_s=stale_after_s)
    if silent:
        log.info("drivers went offline after no ping", extra={"driver_ids": silent})
    best_effort(driver_index().forget_silent, stale_after_s)
    return len(silent)


@shared_task(name="workers.tasks.refresh_stats", acks_late=True, **RETRY)
def refresh_stats() -> dict:
    """Recompute booking stats into Redis for GET /v1/stats and the metrics scrape."""
    with reader()() as session:
        stats = booking_stats(session, now=_now(), time_zones=dict(settings().region_time_zones))
    snapshots.save(cache(), snapshots.STATS_KEY, stats, settings().stats_ttl_s)
    return stats["by_status"]


@shared_task(name="workers.tasks.refresh_surge", acks_late=True, **RETRY)
def refresh_surge() -> dict:
    """Move each region's surge multiplier towards what demand and supply call for now."""
    config = settings()
    policy = surge.SurgePolicy(
        cap_pct=config.surge_cap_pct,
        smoothing_pct=config.surge_smoothing_pct,
        window_s=config.surge_window_s,
    )
    with sessions()() as session, session.begin():
        levels = surge.recompute(session, config.regions, match_policy(), policy)
    return {region: level.multiplier_pct for region, level in levels.items()}


@shared_task(name="workers.tasks.refresh_health", acks_late=True, **RETRY)
def refresh_health() -> dict:
    """Record pool use, queue depths and live workers (smartroute.infra.heartbeat) for operators."""
    app = refresh_health.app
    with sessions()() as session:
        connections: dict[str, int] = dict(
            session.execute(
                text(
                    "SELECT coalesce(nullif(application_name, ''), 'other'), count(*) "
                    "FROM pg_stat_activity WHERE datname = current_database() GROUP BY 1"
                )
            ).all()
        )
    snapshot = {
        "computed_at": _now().isoformat(),
        "database_connections": connections,
        "queue_depths": queue_depths(app, settings().queues),
        "workers_alive": heartbeat.alive(cache(), time.time()),
    }
    snapshots.save(cache(), snapshots.HEALTH_KEY, snapshot, settings().stats_ttl_s)
    return snapshot


# A publisher run keeps going while commits keep coming, pausing this long after a small
# batch so the next one gathers more, for at most PUBLISH_RUN_S; then it hands over.
PUBLISH_GATHER_S = 0.02
PUBLISH_RUN_S = 1.0
# Asked to run again and again under a steady stream of commits, a task hands over to a
# fresh message after this long, well inside Celery's soft time limit (celeryconfig).
PUBLISH_TASK_S = 10.0


@shared_task(name="workers.tasks.publish_outbox", acks_late=True, **RETRY)
def publish_outbox() -> int:
    """Send waiting pushes in publication order, and delete them. One publisher at a time,
    and none waits for another: a publisher that finds the lock held leaves the work to
    its holder and frees its worker at once.

    The hand-over cannot lose a wake-up. A publisher that finds the lock held sets the
    "publish again" flag and only then tries the lock once more; the holder, after it lets
    go, reads and clears the flag and runs again if it was set. If the second try fails,
    someone held the lock after the flag was set, so that holder's check, made after it
    lets go, sees the flag (or a later holder's does) and runs again, reading after this
    publisher's events committed. If the second try succeeds, this publisher runs itself.
    Either way those events are read by a run that starts after they committed. Without
    Redis the flag is lost, and beat's periodic publish catches up instead.
    """
    sent = 0
    handed_over = False
    task_ends_at = time.monotonic() + PUBLISH_TASK_S
    while True:
        delivered, finished = _run()
        sent += delivered
        if not finished:
            if handed_over:
                return sent  # The holder will see the flag.
            ask_to_publish_again(cache())
            handed_over = True
            continue
        handed_over = False
        if not asked_to_publish_again(cache()):
            return sent
        if time.monotonic() >= task_ends_at:
            # The ask is taken, so it must be answered: by a new message, not coalesced
            # away (no cache), that any worker may pick up.
            request_publish(publish_outbox.app)
            return sent


def _run() -> tuple[int, bool]:
    """One publisher run: how many events it sent, and whether it finished (False when
    another publisher held the lock).

    While it runs, commits do not ask for another run (smartroute.infra.enqueue); it reads
    again until a read finds nothing, or its time is up. Then it lets commits ask again
    and reads until a read finds nothing: a commit that did not ask committed before
    that, so that last read has it. A busy engine thus sends a handful of publish
    messages a second, not one per commit, without holding any message back.
    """
    sent = 0
    ends_at = time.monotonic() + PUBLISH_RUN_S
    while delivered := _publish_batch():
        sent += delivered
        if time.monotonic() >= ends_at:
            break
        if delivered < OUTBOX_BATCH:
            time.sleep(PUBLISH_GATHER_S)
    if delivered is None:
        return sent, False
    publish_finished(cache())
    while delivered := _publish_batch():
        sent += delivered
    return sent, delivered is not None


def _publish_batch() -> int | None:
    """One batch positioned, then delivered and deleted; how many (None: lock held)."""
    delivered = publisher().publish_batch(sessions(), OUTBOX_BATCH)
    if delivered:
        PUSHES.inc(delivered)
    return delivered


# A prune run deletes at most this many batches, each in a transaction of its own, so it
# neither holds many row locks at once nor runs for long; the next run takes the rest.
PRUNE_BATCH = 1000
PRUNE_BATCHES_PER_RUN = 20


def _prune(prune, older_than_s: int) -> int:
    pruned = 0
    for _batch in range(PRUNE_BATCHES_PER_RUN):
        with sessions()() as session, session.begin():
            deleted = prune(session, older_than_s=older_than_s, batch=PRUNE_BATCH)
        pruned += deleted
        if deleted < PRUNE_BATCH:
            break
    return pruned


@shared_task(name="workers.tasks.prune_idempotency_keys", acks_late=True, **RETRY)
def prune_idempotency_keys() -> int:
    """Forget Idempotency-Keys older than SMARTROUTE_IDEMPOTENCY_TTL_S."""
    return _prune(retention.prune_idempotency_keys, settings().idempotency_ttl_s)


@shared_task(name="workers.tasks.prune_access_tokens", acks_late=True, **RETRY)
def prune_access_tokens() -> int:
    """Forget signed tokens expired or revoked more than SMARTROUTE_TOKEN_PRUNE_AFTER_S ago."""
    return _prune(retention.prune_access_tokens, settings().token_prune_after_s)


@shared_task(name="workers.tasks.prune_quotes", acks_late=True, **RETRY)
def prune_quotes() -> int:
    """Forget quotes nobody booked, SMARTROUTE_QUOTE_PRUNE_AFTER_S after they lapsed."""
    return _prune(retention.prune_quotes, settings().quote_prune_after_s)


# Rebalancing: advisory suggestions to idle drivers, pushed straight to their rooms.
@shared_task(name="workers.tasks.suggest_repositioning", acks_late=True, **RETRY)
def suggest_repositioning(interval_s: float | None = None) -> dict[str, int]:
    """Suggest to idle drivers, region by region, a zone to wait in; push each suggestion,
    good for ``interval_s`` (beat's interval), and none to a driver sent one within it."""
    config = settings()
    interval_s = config.rebalance_every_s if interval_s is None else interval_s
    policy = rebalancing.RebalancePolicy(
        cell_km=config.rebalance_cell_km,
        horizon_s=config.rebalance_horizon_s,
        max_move_km=config.rebalance_max_move_km,
        max_share=config.rebalance_max_share,
    )
    client = publisher().redis
    with sessions()() as session, session.begin():
        now = transaction_now(session)
        # Drivers told within the interval stay where they are in the plan.
        told = reposition.recently_told(client, now)
        moves = rebalancing.plan(
            session, config.regions, match_policy(), cost_model(), policy, told=told
        )
    sent = reposition.send(client, publisher().host_id, moves, interval_s, now)
    for region, count in sent.items():
        REPOSITION_SUGGESTIONS.labels(region).inc(count)
    return dict(sent)
