"""Token buckets: at most COUNT of something per SECONDS, with bursts up to COUNT.

Sans-I/O (the caller passes the time), so the REST rate limit, the worker's log handler
and the supervisor's log forwarding share one tested implementation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    capacity: int
    period: float  # seconds in which ``capacity`` tokens come back
    tokens: float = field(init=False)
    updated: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = float(self.capacity)
        self.updated = -math.inf

    def _refill(self, now: float) -> None:
        rate = self.capacity / self.period
        self.tokens = min(float(self.capacity), self.tokens + (now - self.updated) * rate)
        self.updated = now

    def take(self, now: float) -> float:
        """Take one token: 0.0 if there was one, else the seconds until there will be."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) * self.period / self.capacity

    def full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.capacity

    def spend(self, now: float, amount: float) -> float:
        """Take ``amount`` tokens even if that leaves a debt; the seconds until it is repaid.
        For what has already happened (bytes already read): the caller waits that long."""
        self._refill(now)
        self.tokens -= amount
        return max(0.0, -self.tokens * self.period / self.capacity)


class LineBudget:
    """Lines allowed per period, with a count of those dropped for a periodic summary.

    ``allow(now)`` says whether to pass a line on; ``summary(now)`` returns how many were
    dropped since the last summary, at most once per ``period`` (None when there is
    nothing to say yet), so a flood turns into one line every ``period`` seconds.
    """

    def __init__(self, count: int, period: float) -> None:
        self.bucket = TokenBucket(count, period)
        self.period = period
        self.dropped = 0
        self._last_summary = -math.inf

    def allow(self, now: float) -> bool:
        if self.bucket.take(now) == 0.0:
            return True
        self.dropped += 1
        return False

    def summary(self, now: float) -> int | None:
        if not self.dropped or now - self._last_summary < self.period:
            return None
        dropped, self.dropped, self._last_summary = self.dropped, 0, now
        return dropped


def parse_rate(text: str) -> tuple[int, float] | None:
    """``"10/60"`` -> (10, 60.0): at most 10 per 60 s; ``"off"`` -> None. ValueError otherwise."""
    text = text.strip().lower()
    if text in ("off", "0", "none"):
        return None
    count, sep, seconds = text.partition("/")
    try:
        parsed = (int(count), float(seconds)) if sep else None
    except ValueError:
        parsed = None
    if parsed is None or parsed[0] < 1 or not 0 < parsed[1] < 1e9:
        raise ValueError(f"rate {text!r} must be COUNT/SECONDS (e.g. 10/60: ten per minute) or off")
    return parsed
