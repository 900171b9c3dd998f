"""SmartRoute's configuration: the environment, read once into a frozen object.

Every entry point (API, worker, beat, CLI, tests) builds its settings here, so a
variable means the same thing everywhere. Secrets have no default: when
``SMARTROUTE_ADMIN_TOKEN`` or ``SMARTROUTE_SECRET_KEY`` is unset, the CLI generates one once
and keeps it in the data folder (mode 600); Compose requires both.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from dispatch.fares import Tariff, parse_tariffs
from dispatch.matching.window import WindowPolicy
from dispatch.regions import Region, parse_regions, parse_time_zones, region_names
from dispatch.states import STUCK_RIDE_ACTIONS
from smartroute.infra.queues import MAINTENANCE, NOTIFY, dispatch_queue


class ConfigError(ValueError):
    """An environment variable holds a value SmartRoute cannot use."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _regions(env: Mapping[str, str]) -> tuple[Region, ...]:
    try:
        return parse_regions(env.get("SMARTROUTE_REGIONS", ""))
    except ValueError as exc:
        raise ConfigError(f"SMARTROUTE_REGIONS: {exc}") from None


def _limit(env: Mapping[str, str], name: str, default: str) -> str:
    from limits import parse  # The same parser the API's limiter uses.

    value = env.get(name) or default
    try:
        parse(value)
    except ValueError:
        raise ConfigError(f"{name} must look like '20/minute', got {value!r}") from None
    return value


def _tariffs(env: Mapping[str, str]) -> tuple[tuple[str, Tariff], ...]:
    try:
        return parse_tariffs(env.get("SMARTROUTE_TARIFFS", ""), region_names(_regions(env)))
    except ValueError as exc:
        raise ConfigError(f"SMARTROUTE_TARIFFS: {exc}") from None


def _time_zones(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    try:
        return parse_time_zones(
            env.get("SMARTROUTE_REGION_TIME_ZONES", ""), region_names(_regions(env))
        )
    except ValueError as exc:
        raise ConfigError(f"SMARTROUTE_REGION_TIME_ZONES: {exc}") from None


def _surge_cap_pct(env: Mapping[str, str]) -> int:
    """SMARTROUTE_SURGE_CAP is a multiplier (3.0 is x3), kept as a whole percentage."""
    cap = _float(env, "SMARTROUTE_SURGE_CAP", 3.0, minimum=1.0)
    if cap > 10.0:
        raise ConfigError(f"SMARTROUTE_SURGE_CAP must be at most 10, got {cap}")
    return round(cap * 100)


def _smoothing_pct(env: Mapping[str, str]) -> int:
    smoothing = _float(env, "SMARTROUTE_SURGE_SMOOTHING", 0.5, minimum=0.01)
    if smoothing > 1.0:
        raise ConfigError(f"SMARTROUTE_SURGE_SMOOTHING must be at most 1, got {smoothing}")
    return max(1, round(smoothing * 100))


def _stuck_ride_policy(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """``SMARTROUTE_STUCK_RIDE_POLICY``: an action for every region, then exceptions by
    region, e.g. ``rematch`` or ``rematch,porto=cancel``; each action is rematch or
    cancel."""
    name = "SMARTROUTE_STUCK_RIDE_POLICY"
    raw = (env.get(name) or "rematch").strip()
    known = set(region_names(_regions(env)))
    policy: list[tuple[str, str]] = []
    for position, part in enumerate(p.strip() for p in raw.split(",")):
        region, _, action = part.rpartition("=")
        region = region.strip() or "*"
        action = action.strip()
        if action not in STUCK_RIDE_ACTIONS:
            raise ConfigError(f"{name}: {action!r} is not one of rematch, cancel (got {raw!r})")
        if (region == "*") != (position == 0):
            raise ConfigError(
                f"{name}: the first entry is an action for every region, the rest "
                f"region=action (got {raw!r})"
            )
        if region != "*" and region not in known:
            raise ConfigError(f"{name}: no region named {region!r} in SMARTROUTE_REGIONS")
        policy.append((region, action))
    return tuple(policy)


MIN_SECRET_KEY_LENGTH = 32


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """An optional secret, refused when shorter than MIN_SECRET_KEY_LENGTH. The bootstrap
    admin token is unsigned: its length is all that stands between it and a guess."""
    value = _optional(env, name)
    if value is not None and len(value) < MIN_SECRET_KEY_LENGTH:
        raise ConfigError(
            f"{name} must be at least {MIN_SECRET_KEY_LENGTH} characters; "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'` makes one"
        )
    return value


def _port(env: Mapping[str, str], name: str) -> int | None:
    if not env.get(name, "").strip():
        return None
    port = _int(env, name, 0, minimum=1)
    if port > 65535:
        raise ConfigError(f"{name} must be a TCP port (1-65535), got {port}")
    return port


def _optional(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _relay_public_url(env: Mapping[str, str]) -> str | None:
    url = _optional(env, "SMARTROUTE_RELAY_PUBLIC_URL")
    if url is not None and not url.startswith(("http://", "https://")):
        raise ConfigError(
            f"SMARTROUTE_RELAY_PUBLIC_URL must start with http:// or https://, got {url!r}"
        )
    return url.rstrip("/") if url else None


def _share(env: Mapping[str, str], name: str, default: float) -> float:
    share = _float(env, name, default)
    if share > 1:
        raise ConfigError(f"{name} is a share from 0 to 1, got {share}")
    return share


@dataclass(frozen=True)
class Settings:
    # Services. None means "start the embedded one in data_dir".
    database_url: str | None = None
    redis_url: str | None = None
    broker_url: str | None = None
    data_dir: Path = Path(".smartroute")

    # The bootstrap admin's token and the key that signs issued tokens; never logged.
    admin_token: str | None = None
    secret_key: str | None = None
    # What Prometheus (or an operator) presents to read /metrics and the detailed /health.
    metrics_token: str | None = None
    token_ttl_s: int = 7 * 24 * 3600
    # How long the API takes a token on the database's word before asking it again.
    token_recheck_s: int = 60

    # Connection pool of each process: 5 kept, 15 more under load, 20 at most.
    db_pool_size: int = 5
    db_max_overflow: int = 15
    db_pool_timeout_s: float = 30.0
    db_pool_recycle_s: int = 1800
    # A session idle inside a transaction this long is ended by PostgreSQL (see dispatch/db.py).
    db_idle_in_transaction_timeout_s: float = 10.0

    # Dispatch tunables.
    offer_window_s: int = 25
    dispatch_deadline_s: int = 300
    match_radius_km: float = 5.0
    match_candidates: int = 10
    retry_interval_s: int = 5
    schedule_lead_s: int = 600
    driver_stale_s: int = 120

    # Beat intervals.
    sweep_offers_every_s: float = 2.0
    redispatch_every_s: float = 2.0
    expire_every_s: float = 5.0

    # HTTP.
    max_body_bytes: int = 64 * 1024

    # Logging: "json", "console", or None to choose by whether stderr is a terminal.
    log_format: str | None = None
    log_level: str = "INFO"

    # Operations: a read replica, cached stats and health, the silent-driver sweep.
    database_replica_url: str | None = None
    stats_every_s: float = 30.0
    stats_ttl_s: int = 300
    health_every_s: float = 15.0
    offline_every_s: float = 10.0

    # Matching: batches, regions and the ETA model.
    # The longest a region's bookings wait to be matched together, and the shortest the
    # window shrinks to when drivers are plentiful (dispatch.matching.window); equal: fixed.
    batch_window_s: float = 1.0
    batch_window_min_s: float = 0.02
    batch_limit: int = 500
    max_radius_km: float = 15.0
    speed_kmh: float = 25.0
    road_factor: float = 1.35
    regions: tuple[Region, ...] = ()

    # Rate limits (``limits`` notation), per token and per client address.
    booking_limit_per_token: str = "20/minute"
    booking_limit_per_address: str = "600/minute"
    location_limit_per_token: str = "120/minute"
    location_limit_per_address: str = "6000/minute"
    quote_limit_per_token: str = "60/minute"
    quote_limit_per_address: str = "1200/minute"

    # Real-time push: the relay and the outbox.
    relay_async_mode: str = "eventlet"
    relay_cors_origins: tuple[str, ...] = ()
    # Where browsers reach the relay; None means the page's own host, API port + 1 (as
    # ``smartroute up`` runs it). Set it when a proxy puts the relay elsewhere.
    relay_public_url: str | None = None
    relay_max_message_bytes: int = 64 * 1024
    relay_revalidate_every_s: float = 1.0
    publish_every_s: float = 1.0
    outbox_retention_s: int = 86400

    # Database session limits, set on the role by `smartroute db upgrade` (dispatch/db.py),
    # and how long idempotency keys and dead access tokens are kept before the prune tasks.
    db_statement_timeout_s: float = 30.0
    db_lock_timeout_s: float = 5.0
    idempotency_ttl_s: int = 86400
    token_prune_after_s: int = 7 * 86400
    # The HTTP edge: limits checked before authentication, proxy hops trusted, per-token limits.
    # Requests per address bound every /v1 call, so they stay at least the location pings'.
    request_limit_per_address: str = "6000/minute"
    auth_failure_limit_per_address: str = "60/minute"
    trusted_proxy_hops: int = 0
    refresh_limit_per_token: str = "10/hour"
    driver_action_limit_per_token: str = "60/minute"
    # A worker node's /metrics (its main process): no server unless a port is given.
    worker_metrics_port: int | None = None
    worker_metrics_host: str = "127.0.0.1"
    # Push replay: how many events (by position) the replay streams keep behind the newest.
    replay_events: int = 20000
    # Token families: how long refreshes may carry a sign-in forward.
    token_max_lifetime_s: int = 30 * 24 * 3600
    # The relay's limits: Socket.IO connections one relay holds at once (a city's drivers;
    # its one cap, answered 503), and driver actions per token across every relay
    # (``limits`` notation).
    relay_max_connections: int = 20000
    # The relay's Redis connections, and how long an event waits for one when all are busy
    # (a burst of connects queues for them rather than failing).
    relay_redis_connections: int = 50
    relay_redis_wait_s: float = 10.0
    relay_action_limit_per_token: str = "60/minute"
    # Drivers' location pings over the relay: how often a relay writes the pings it received
    # to Redis (one pipeline a tick), and how often it writes drivers' last-known positions
    # to PostgreSQL (one statement a flush).
    relay_location_tick_s: float = 0.2
    location_flush_s: float = 2.0
    # The fewest seconds between two of a ride's driver positions pushed to its rider (a
    # relay pushes them after each flush, so a flush interval below this is thinned).
    rider_position_every_s: float = 2.0
    # Ride history and ratings: how long after completion a ride may be rated.
    rating_window_s: int = 7 * 86400
    # Seconds of pickup ETA a one-star average costs a driver in the batch matcher (0: off).
    match_rating_weight_s: float = 0.0
    # Prices: tariffs per region (minor units), how long a quote stands, the surge's
    # recomputation, cap (a whole percentage: 300 is x3), smoothing and demand window, and
    # each region's time zone for "today" (dispatch/fares.py, dispatch/surge.py).
    tariffs: tuple[tuple[str, Tariff], ...] = ()
    quote_ttl_s: int = 300
    quote_prune_after_s: int = 86400
    surge_every_s: float = 15.0
    surge_cap_pct: int = 300
    surge_smoothing_pct: int = 50
    surge_window_s: int = 600
    region_time_zones: tuple[tuple[str, str], ...] = ()

    # Arrival, cancellations, no-shows and stuck rides: the wait at the pickup before a
    # no-show, how long an accepted ride may go unstarted and what beat then does with it,
    # region by region (("*", action) for every other region), when a ride under way is
    # flagged as running too long, and how often beat looks.
    no_show_wait_s: int = 300
    # How long after assignment a rider's cancel costs nothing (then the tariff's fee).
    cancel_grace_s: int = 120
    start_timeout_s: int = 1800
    stuck_ride_policy: tuple[tuple[str, str], ...] = (("*", "rematch"),)
    max_ride_s: int = 4 * 3600
    stuck_every_s: float = 30.0

    # Rebalancing: how often beat suggests where idle drivers should wait (each driver at
    # most once per interval), the zones' side, how far a move may go, the share of a
    # region's idle drivers moved per run, and the forecast's horizon
    # (dispatch/rebalancing.py).
    rebalance_every_s: float = 30.0
    rebalance_cell_km: float = 1.0
    rebalance_max_move_km: float = 6.0
    rebalance_max_share: float = 0.3
    rebalance_horizon_s: float = 600.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every SmartRoute variable from ``env`` (default: the process environment)."""
        env = os.environ if env is None else env
        log_format = _optional(env, "SMARTROUTE_LOG_FORMAT")
        if log_format not in (None, "json", "console"):
            raise ConfigError(f"SMARTROUTE_LOG_FORMAT must be json or console, got {log_format!r}")
        return cls(
            database_url=_optional(env, "DATABASE_URL"),
            redis_url=_optional(env, "REDIS_URL"),
            broker_url=_optional(env, "CELERY_BROKER_URL"),
            data_dir=Path(env.get("SMARTROUTE_DATA_DIR") or ".smartroute"),
            admin_token=_secret(env, "SMARTROUTE_ADMIN_TOKEN"),
            secret_key=_secret(env, "SMARTROUTE_SECRET_KEY"),
            metrics_token=_secret(env, "SMARTROUTE_METRICS_TOKEN"),
            token_ttl_s=_int(env, "SMARTROUTE_TOKEN_TTL_S", 7 * 24 * 3600, minimum=60),
            token_recheck_s=_int(env, "SMARTROUTE_TOKEN_RECHECK_S", 60, minimum=0),
            db_pool_size=_int(env, "SMARTROUTE_DB_POOL_SIZE", 5, minimum=1),
            db_max_overflow=_int(env, "SMARTROUTE_DB_MAX_OVERFLOW", 15),
            db_pool_timeout_s=_float(env, "SMARTROUTE_DB_POOL_TIMEOUT_S", 30.0),
            db_pool_recycle_s=_int(env, "SMARTROUTE_DB_POOL_RECYCLE_S", 1800, minimum=1),
            # The fence that ends a stalled process's transaction: 0 (PostgreSQL's "never")
            # would silently remove it, so less than a second is refused.
            db_idle_in_transaction_timeout_s=_float(
                env, "SMARTROUTE_DB_IDLE_IN_TRANSACTION_TIMEOUT_S", 10.0, minimum=1.0
            ),
            offer_window_s=_int(env, "SMARTROUTE_OFFER_WINDOW_S", 25, minimum=1),
            dispatch_deadline_s=_int(env, "SMARTROUTE_DISPATCH_DEADLINE_S", 300, minimum=1),
            match_radius_km=_float(env, "SMARTROUTE_MATCH_RADIUS_KM", 5.0, minimum=0.1),
            match_candidates=_int(env, "SMARTROUTE_MATCH_CANDIDATES", 10, minimum=1),
            retry_interval_s=_int(env, "SMARTROUTE_RETRY_INTERVAL_S", 5, minimum=1),
            schedule_lead_s=_int(env, "SMARTROUTE_SCHEDULE_LEAD_S", 600),
            driver_stale_s=_int(env, "SMARTROUTE_DRIVER_STALE_S", 120, minimum=1),
            sweep_offers_every_s=_float(env, "SMARTROUTE_SWEEP_OFFERS_EVERY_S", 2.0, 0.1),
            redispatch_every_s=_float(env, "SMARTROUTE_REDISPATCH_EVERY_S", 2.0, 0.1),
            expire_every_s=_float(env, "SMARTROUTE_EXPIRE_EVERY_S", 5.0, 0.1),
            max_body_bytes=_int(env, "SMARTROUTE_MAX_BODY_BYTES", 64 * 1024, minimum=1024),
            log_format=log_format,
            log_level=(env.get("SMARTROUTE_LOG_LEVEL") or "INFO").upper(),
            database_replica_url=_optional(env, "DATABASE_REPLICA_URL"),
            stats_every_s=_float(env, "SMARTROUTE_STATS_EVERY_S", 30.0, 0.1),
            stats_ttl_s=_int(env, "SMARTROUTE_STATS_TTL_S", 300, minimum=1),
            health_every_s=_float(env, "SMARTROUTE_HEALTH_EVERY_S", 15.0, 0.1),
            offline_every_s=_float(env, "SMARTROUTE_OFFLINE_EVERY_S", 10.0, 0.1),
            batch_window_s=_float(env, "SMARTROUTE_BATCH_WINDOW_S", 1.0),
            batch_window_min_s=_float(env, "SMARTROUTE_BATCH_WINDOW_MIN_S", 0.02),
            batch_limit=_int(env, "SMARTROUTE_BATCH_LIMIT", 500, minimum=1),
            max_radius_km=_float(env, "SMARTROUTE_MAX_RADIUS_KM", 15.0, minimum=0.1),
            speed_kmh=_float(env, "SMARTROUTE_SPEED_KMH", 25.0, minimum=1.0),
            road_factor=_float(env, "SMARTROUTE_ROAD_FACTOR", 1.35, minimum=1.0),
            regions=_regions(env),
            booking_limit_per_token=_limit(env, "SMARTROUTE_BOOKING_LIMIT_PER_TOKEN", "20/minute"),
            booking_limit_per_address=_limit(
                env, "SMARTROUTE_BOOKING_LIMIT_PER_ADDRESS", "600/minute"
            ),
            location_limit_per_token=_limit(
                env, "SMARTROUTE_LOCATION_LIMIT_PER_TOKEN", "120/minute"
            ),
            location_limit_per_address=_limit(
                env, "SMARTROUTE_LOCATION_LIMIT_PER_ADDRESS", "6000/minute"
            ),
            quote_limit_per_token=_limit(env, "SMARTROUTE_QUOTE_LIMIT_PER_TOKEN", "60/minute"),
            quote_limit_per_address=_limit(
                env, "SMARTROUTE_QUOTE_LIMIT_PER_ADDRESS", "1200/minute"
            ),
            relay_async_mode=env.get("SMARTROUTE_RELAY_ASYNC_MODE") or "eventlet",
            relay_cors_origins=tuple(
                o.strip()
                for o in env.get("SMARTROUTE_RELAY_CORS_ORIGINS", "").split(",")
                if o.strip()
            ),
            relay_public_url=_relay_public_url(env),
            relay_max_message_bytes=_int(
                env, "SMARTROUTE_RELAY_MAX_MESSAGE_BYTES", 64 * 1024, minimum=1024
            ),
            relay_revalidate_every_s=_float(env, "SMARTROUTE_RELAY_REVALIDATE_EVERY_S", 1.0, 0.1),
            publish_every_s=_float(env, "SMARTROUTE_PUBLISH_EVERY_S", 1.0, 0.1),
            outbox_retention_s=_int(env, "SMARTROUTE_OUTBOX_RETENTION_S", 86400, minimum=60),
            db_statement_timeout_s=_float(
                env, "SMARTROUTE_DB_STATEMENT_TIMEOUT_S", 30.0, minimum=1.0
            ),
            db_lock_timeout_s=_float(env, "SMARTROUTE_DB_LOCK_TIMEOUT_S", 5.0, minimum=0.1),
            idempotency_ttl_s=_int(env, "SMARTROUTE_IDEMPOTENCY_TTL_S", 86400, minimum=60),
            token_prune_after_s=_int(env, "SMARTROUTE_TOKEN_PRUNE_AFTER_S", 7 * 86400, minimum=60),
            request_limit_per_address=_limit(
                env, "SMARTROUTE_REQUEST_LIMIT_PER_ADDRESS", "6000/minute"
            ),
            auth_failure_limit_per_address=_limit(
                env, "SMARTROUTE_AUTH_FAILURE_LIMIT_PER_ADDRESS", "60/minute"
            ),
            trusted_proxy_hops=_int(env, "SMARTROUTE_TRUSTED_PROXY_HOPS", 0),
            refresh_limit_per_token=_limit(env, "SMARTROUTE_REFRESH_LIMIT_PER_TOKEN", "10/hour"),
            driver_action_limit_per_token=_limit(
                env, "SMARTROUTE_DRIVER_ACTION_LIMIT_PER_TOKEN", "60/minute"
            ),
            worker_metrics_port=_port(env, "SMARTROUTE_WORKER_METRICS_PORT"),
            worker_metrics_host=env.get("SMARTROUTE_WORKER_METRICS_HOST") or "127.0.0.1",
            replay_events=_int(env, "SMARTROUTE_REPLAY_EVENTS", 20000, minimum=1),
            token_max_lifetime_s=_int(
                env, "SMARTROUTE_TOKEN_MAX_LIFETIME_S", 30 * 24 * 3600, minimum=60
            ),
            relay_max_connections=_int(env, "SMARTROUTE_RELAY_MAX_CONNECTIONS", 20000, minimum=1),
            relay_redis_connections=_int(env, "SMARTROUTE_RELAY_REDIS_CONNECTIONS", 50, minimum=2),
            relay_redis_wait_s=_float(env, "SMARTROUTE_RELAY_REDIS_WAIT_S", 10.0, minimum=0.1),
            relay_action_limit_per_token=_limit(
                env, "SMARTROUTE_RELAY_ACTION_LIMIT_PER_TOKEN", "60/minute"
            ),
            relay_location_tick_s=_float(env, "SMARTROUTE_RELAY_LOCATION_TICK_S", 0.2, 0.01),
            location_flush_s=_float(env, "SMARTROUTE_LOCATION_FLUSH_S", 2.0, 0.1),
            rider_position_every_s=_float(env, "SMARTROUTE_RIDER_POSITION_EVERY_S", 2.0, 0.1),
            # Ride history and ratings.
            rating_window_s=_int(env, "SMARTROUTE_RATING_WINDOW_S", 7 * 86400, minimum=60),
            match_rating_weight_s=_float(env, "SMARTROUTE_MATCH_RATING_WEIGHT_S", 0.0),
            # Prices.
            tariffs=_tariffs(env),
            quote_ttl_s=_int(env, "SMARTROUTE_QUOTE_TTL_S", 300, minimum=10),
            quote_prune_after_s=_int(env, "SMARTROUTE_QUOTE_PRUNE_AFTER_S", 86400, minimum=60),
            surge_every_s=_float(env, "SMARTROUTE_SURGE_EVERY_S", 15.0, 0.1),
            surge_cap_pct=_surge_cap_pct(env),
            surge_smoothing_pct=_smoothing_pct(env),
            surge_window_s=_int(env, "SMARTROUTE_SURGE_WINDOW_S", 600, minimum=1),
            region_time_zones=_time_zones(env),
            # Arrival, cancellations, no-shows and stuck rides.
            no_show_wait_s=_int(env, "SMARTROUTE_NO_SHOW_WAIT_S", 300),
            cancel_grace_s=_int(env, "SMARTROUTE_CANCEL_GRACE_S", 120),
            start_timeout_s=_int(env, "SMARTROUTE_START_TIMEOUT_S", 1800, minimum=60),
            stuck_ride_policy=_stuck_ride_policy(env),
            max_ride_s=_int(env, "SMARTROUTE_MAX_RIDE_S", 4 * 3600, minimum=60),
            stuck_every_s=_float(env, "SMARTROUTE_STUCK_EVERY_S", 30.0, 0.1),
            # Rebalancing.
            rebalance_every_s=_float(env, "SMARTROUTE_REBALANCE_EVERY_S", 30.0, 1.0),
            rebalance_cell_km=_float(env, "SMARTROUTE_REBALANCE_CELL_KM", 1.0, 0.1),
            rebalance_max_move_km=_float(env, "SMARTROUTE_REBALANCE_MAX_MOVE_KM", 6.0),
            rebalance_max_share=_share(env, "SMARTROUTE_REBALANCE_MAX_SHARE", 0.3),
            rebalance_horizon_s=_float(env, "SMARTROUTE_REBALANCE_HORIZON_S", 600.0, 10.0),
        )

    def stuck_ride_action(self, region: str) -> str:
        """What beat does with a ride in ``region`` accepted and never started: "rematch"
        (another driver) or "cancel"."""
        policy = dict(self.stuck_ride_policy)
        return policy.get(region, policy.get("*", "rematch"))

    @property
    def batch_window(self) -> WindowPolicy:
        """How long each region's bookings wait to be matched together."""
        return WindowPolicy(
            max_s=self.batch_window_s, min_s=min(self.batch_window_min_s, self.batch_window_s)
        )

    @property
    def celery_broker_url(self) -> str:
        """The broker URL, in kombu's spelling (a Redis unix socket is ``redis+socket://``)."""
        url = self.broker_url or self.redis_url
        if url is None:
            raise ConfigError("no broker: set CELERY_BROKER_URL or REDIS_URL")
        if url.startswith("unix://"):
            return "redis+socket://" + url.removeprefix("unix://")
        return url

    @property
    def dispatch_queues(self) -> tuple[str, ...]:
        """One Celery queue per region, ``dispatch.<region>``."""
        return tuple(dispatch_queue(name) for name in region_names(self.regions))

    @property
    def queues(self) -> tuple[str, ...]:
        """Every Celery queue: each region's dispatch queue, notify and maintenance."""
        return (*self.dispatch_queues, NOTIFY, MAINTENANCE)

    @property
    def worker_queues(self) -> str:
        """The queues a worker serves unless told otherwise, as Celery's -Q wants them."""
        return ",".join(self.queues)

    def with_services(self, database_url: str, redis_url: str) -> Settings:
        """A copy with the service URLs filled in (used once embedded services are up)."""
        return replace(self, database_url=database_url, redis_url=redis_url)

    def to_env(self) -> dict[str, str]:
        """The variables a child process needs to rebuild these settings."""
        env = {
            "SMARTROUTE_DATA_DIR": str(self.data_dir),
        }
        for name, value in (
            ("DATABASE_URL", self.database_url),
            ("REDIS_URL", self.redis_url),
            ("CELERY_BROKER_URL", self.broker_url),
            ("SMARTROUTE_ADMIN_TOKEN", self.admin_token),
            ("SMARTROUTE_SECRET_KEY", self.secret_key),
            ("SMARTROUTE_METRICS_TOKEN", self.metrics_token),
            ("DATABASE_REPLICA_URL", self.database_replica_url),
        ):
            if value:
                env[name] = value
        return env
