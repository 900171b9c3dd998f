"""Rate limits: a gate on every client address before authentication, and per-token limits
on the endpoints a misbehaving client hammers (booking, quotes, location pings, driver
actions, token refresh).

The address gate runs before any token is looked at, so a client guessing tokens pays one
Redis round trip per request and never reaches PostgreSQL: it counts the address's requests
and refuses an address that has presented too many bad tokens lately. Behind a proxy the
address is the client's only when ``SMARTROUTE_TRUSTED_PROXY_HOPS`` says how many
X-Forwarded-For entries to trust (``web/__init__.py`` installs werkzeug's ProxyFix).

Per-token limits use ``limits`` (the engine under Flask-Limiter, used directly so every app
the factory builds has its own limiter). All counters live in Redis, so the limits hold
across gunicorn workers and API hosts. If Redis cannot be reached the request goes through:
a rate limit is protection, never the reason a booking fails.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable

import redis
from flask import Flask, current_app, g, request
from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter
from werkzeug.exceptions import RequestEntityTooLarge

from web.errors import ApiError

log = logging.getLogger(__name__)

GATE_PREFIX = "smartroute:edge:"


def storage_url(redis_url: str) -> str:
    """The ``limits`` spelling of a Redis URL (a unix socket is ``redis+unix://``)."""
    if redis_url.startswith("unix://"):
        return "redis+unix://" + redis_url.removeprefix("unix://")
    return redis_url


def _too_many(what: str, retry_after: int) -> ApiError:
    return ApiError(
        429,
        "rate_limited",
        f"too many {what}; retry in {retry_after} s",
        retry_after_s=retry_after,
        headers={"Retry-After": str(retry_after)},
    )


class RateLimits:
    def __init__(self, redis_url: str, rules: dict[str, tuple[str, str | None]]) -> None:
        """``rules`` maps a kind ("booking", "location", …) to its per-token limit and its
        per-address limit (None: the address gate alone bounds addresses)."""
        self.limiter = SlidingWindowCounterRateLimiter(storage_from_string(storage_url(redis_url)))
        self.rules: dict[str, tuple[RateLimitItem, RateLimitItem | None]] = {
            kind: (parse(per_token), parse(per_address) if per_address else None)
            for kind, (per_token, per_address) in rules.items()
        }

    def enforce(self, kind: str, user_id: int) -> None:
        """Count this request; a 429 with Retry-After when either limit is exceeded."""
        per_token, per_address = self.rules[kind]
        checks = [(per_token, "token", str(user_id))]
        if per_address is not None:
            checks.append((per_address, "address", request.remote_addr or "unknown"))
        for item, scope, who in checks:
            retry_after = seconds_over(self.limiter, item, "smartroute", kind, scope, who)
            if retry_after is not None:
                raise _too_many(f"{kind} requests from this {scope}", retry_after)


def seconds_over(
    limiter: SlidingWindowCounterRateLimiter, item: RateLimitItem, *keys: str
) -> int | None:
    """Count one hit on ``keys`` against ``item``: None if it is within the limit (or Redis
    could not be asked: a limit never stops a request by failing), else the seconds to
    wait. The API's per-token limits and the relay's action limit both count this way."""
    try:
        if limiter.hit(item, *keys):
            return None
        reset_at = limiter.get_window_stats(item, *keys).reset_time
    except Exception as exc:  # Redis down: let it through.
        log.warning("rate limit not checked: %s", exc.__class__.__name__)
        return None
    return max(1, math.ceil(reset_at - time.time()))


def limited(kind: str) -> Callable:
    """The view counts against the per-token limit ``kind``; put it under ``@requires``."""

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            current_app.extensions["smartroute"].limits.enforce(kind, g.actor.id)
            return view(*args, **kwargs)

        return wrapper

    return decorate


def _retry_after(previous: float, current: float, limit: int, elapsed: float, window: int) -> int:
    """Seconds until a sliding-window count (``previous`` weighted by what is left of it,
    plus ``current``) falls below ``limit`` if nothing more is counted meanwhile."""
    if current < limit and previous > 0:
        wait = window * (1 - (limit - current) / previous) - elapsed
    else:
        # This window alone is over: it must end and then fade as the previous one.
        wait = (window - elapsed) + window * (1 - limit / max(current, 1))
    return max(1, math.ceil(wait))


class AddressGate:
    """Per-address request and failed-authentication counters, as sliding-window counters
    (the previous fixed window weighted by how much of it still overlaps, plus this one),
    read and counted in one pipelined Redis round trip."""

    def __init__(self, client: redis.Redis, requests: str, failures: str) -> None:
        self.client = client
        self.requests, self.failures = parse(requests), parse(failures)

    @staticmethod
    def _keys(what: str, item: RateLimitItem, address: str, now: float) -> tuple[str, str]:
        window = item.get_expiry()
        index = int(now // window)
        base = f"{GATE_PREFIX}{what}:{item.amount}/{window}:{address}:"
        return base + str(index), base + str(index - 1)

    def check(self, address: str) -> None:
        """Count a request from ``address``; a 429 if it is over either limit."""
        now = time.time()
        req_now, req_before = self._keys("requests", self.requests, address, now)
        fail_now, fail_before = self._keys("auth-failures", self.failures, address, now)
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.incr(req_now)
                pipe.expire(req_now, 2 * self.requests.get_expiry())
                pipe.mget(req_before, fail_now, fail_before)
                count, _, (before, failed, failed_before) = pipe.execute()
        except (redis.RedisError, OSError) as exc:
            log.warning("address limits not checked: %s", exc.__class__.__name__)
            return
        for item, current, previous, what in (
            (
                self.failures,
                int(failed or 0),
                int(failed_before or 0),
                "failed authentications from this address",
            ),
            (self.requests, int(count) - 1, int(before or 0), "requests from this address"),
        ):
            window = item.get_expiry()
            elapsed = now % window
            if previous * (1 - elapsed / window) + current >= item.amount:
                raise _too_many(what, _retry_after(previous, current, item.amount, elapsed, window))

    def failed(self, address: str) -> None:
        """Count a token that ``address`` presented and authentication refused."""
        key, _ = self._keys("auth-failures", self.failures, address, time.time())
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.incr(key)
                pipe.expire(key, 2 * self.failures.get_expiry())
                pipe.execute()
        except (redis.RedisError, OSError) as exc:
            log.warning("failed authentication not counted: %s", exc.__class__.__name__)


def _gated(path: str) -> bool:
    """Every route that reads a token: the API, and the detailed health and metrics."""
    return path.startswith("/v1/") or path in ("/health", "/metrics")


def _refuse_long_chunked_body(max_body_bytes: int) -> None:
    """A chunked body declares no length, and werkzeug's reader (bounded by
    MAX_CONTENT_LENGTH) stops at the limit without saying there was more: the view would
    parse a truncated body. Read it here, at most the limit (kept for the view), and refuse
    it if the client sent more."""
    body = request.get_data(cache=True)
    if len(body) >= max_body_bytes and request.environ["wsgi.input"].read(1):
        raise RequestEntityTooLarge()


def guard_edge(app: Flask, gate: AddressGate, max_body_bytes: int) -> None:
    """Install the checks every request meets before its view, and so before authentication:
    the declared body size, the address gate, then the size of a chunked body."""

    @app.before_request
    def _check_edge():
        # A declared length over the limit is refused before a byte of the body is read or a
        # token is looked at.
        if request.content_length is not None and request.content_length > max_body_bytes:
            raise RequestEntityTooLarge()
        if _gated(request.path):
            gate.check(request.remote_addr or "unknown")
        # Read only once the address is let in: this buffers up to the limit.
        if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
            _refuse_long_chunked_body(max_body_bytes)

    @app.after_request
    def _count_failed_authentication(response):
        # Only a token that was presented and refused counts: a missing header costs no
        # lookup, and is what a browser's first request looks like.
        if (
            response.status_code == 401
            and _gated(request.path)
            and "Authorization" in request.headers
        ):
            gate.failed(request.remote_addr or "unknown")
        return response
