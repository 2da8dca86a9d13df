"""Requests per key (a phone's device key, a sign-in name and address): a token bucket each,
with the clock as a parameter."""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_BUCKETS = 1_000_000  # forgets the fullest buckets past this (every registered phone fits)


@dataclass
class RateLimiter:
    """``burst`` requests at once, then ``per_minute`` sustained; :meth:`take` returns 0 when
    a request may go, else the seconds until it may."""

    per_minute: float
    burst: int
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # tokens, at

    def take(self, key: str, now: float) -> float:
        rate = self.per_minute / 60.0
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / rate
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > MAX_BUCKETS:
            self._forget_full(now)
        return 0.0

    def _forget_full(self, now: float) -> None:
        """A bucket that has refilled is the same as none."""
        rate = self.per_minute / 60.0
        self._buckets = {k: (t, at) for k, (t, at) in self._buckets.items()
                         if t + (now - at) * rate < self.burst}
