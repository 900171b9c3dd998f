"""Rate limits on the endpoints a misbehaving client hammers: booking and location pings.

Each is limited per token (one rider or driver) and per client address (many tokens
from one place). Counters live in Redis (``limits``, the engine under Flask-Limiter,
used directly so every app the factory builds has its own limiter), so the limits hold
across gunicorn workers and API hosts. If Redis cannot be reached the request goes
through: a rate limit is protection, never the reason a booking fails.
"""

from __future__ import annotations

import logging
import math
import time

from flask import request
from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from web.errors import ApiError

log = logging.getLogger(__name__)


def storage_url(redis_url: str) -> str:
    """The ``limits`` spelling of a Redis URL (a unix socket is ``redis+unix://``)."""
    if redis_url.startswith("unix://"):
        return "redis+unix://" + redis_url.removeprefix("unix://")
    return redis_url


class RateLimits:
    def __init__(self, redis_url: str, rules: dict[str, tuple[str, str]]) -> None:
        """``rules`` maps a kind ("booking", "location") to (per-token, per-address) limits."""
        self.limiter = SlidingWindowCounterRateLimiter(storage_from_string(storage_url(redis_url)))
        self.rules: dict[str, tuple[RateLimitItem, RateLimitItem]] = {
            kind: (parse(per_token), parse(per_address)) for kind, (per_token, per_address)
            in rules.items()
        }

    def enforce(self, kind: str, user_id: int) -> None:
        """Count this request; a 429 with Retry-After when either limit is exceeded."""
        per_token, per_address = self.rules[kind]
        for item, scope, who in ((per_token, "token", str(user_id)),
                                 (per_address, "address", request.remote_addr or "unknown")):
            try:
                allowed = self.limiter.hit(item, "smartroute", kind, scope, who)
                if allowed:
                    continue
                reset_at = self.limiter.get_window_stats(item, "smartroute", kind, scope,
                                                         who).reset_time
            except Exception as exc:  # Redis down: let the request through.
                log.warning("rate limit not checked: %s", exc.__class__.__name__)
                return
            retry_after = max(1, math.ceil(reset_at - time.time()))
            raise ApiError(429, "rate_limited",
                           f"too many {kind} requests from this {scope}; retry in {retry_after} s",
                           retry_after_s=retry_after, headers={"Retry-After": str(retry_after)})
