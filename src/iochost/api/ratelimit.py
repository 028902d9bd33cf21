"""Rate limit of expensive operations (add, start, restart): a token bucket per caller.

A bucket holds up to COUNT tokens and refills at COUNT per SECONDS (``add_rate``, e.g.
``10/60``); each expensive request takes one, and an empty bucket answers 429
RATE_LIMITED with ``Retry-After``. The caller is the bearer token (keyed by a hash of it,
so no token is kept in memory longer than the request) or, when the API has no tokens,
the client address. The dependency runs after the auth dependency on each route, so a
request without a valid token never spends the admin's budget.
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Callable

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials

from iochost.api.auth import bearer
from iochost.budget import TokenBucket
from iochost.errors import ErrorCode, IochostError

MAX_BUCKETS = 10_000  # full (idle) buckets are dropped beyond this, so many clients cannot grow memory


class RateLimiter:
    """Buckets by caller key; used from the event loop only (the dependency is async)."""

    def __init__(self, count: int, period: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.count, self.period, self.clock = count, period, clock
        self.buckets: dict[str, TokenBucket] = {}

    def check(self, key: str) -> float:
        """0.0 if ``key`` may go ahead now, else the seconds it has to wait."""
        now = self.clock()
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= MAX_BUCKETS:
                self.buckets = {k: b for k, b in self.buckets.items() if not b.full(now)}
            bucket = self.buckets[key] = TokenBucket(self.count, self.period)
        return bucket.take(now)


def caller_key(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str:
    """The bucket a request spends from: its token (hashed) or, without auth, its address."""
    settings = request.app.state.settings
    if settings.auth_enabled and credentials is not None:
        return "token:" + hashlib.sha256(credentials.credentials.encode()).hexdigest()[:32]
    return "addr:" + (request.client.host if request.client else "unknown")


async def limit_expensive(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
) -> None:
    """Route dependency: one token from the caller's bucket, or 429 RATE_LIMITED."""
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is None:
        return
    wait = limiter.check(caller_key(request, credentials))
    if wait > 0:
        retry_after = max(1, math.ceil(wait))
        raise IochostError(
            ErrorCode.RATE_LIMITED,
            f"too many expensive operations (add, start, restart): at most {limiter.count} "
            f"per {limiter.period:g} s; retry in {retry_after} s",
            retry_after=retry_after,
        )


def create_limiter(rate: tuple[int, float] | None) -> RateLimiter | None:
    return RateLimiter(*rate) if rate is not None else None
