"""The pace of a migration: a token bucket the waves and the copy take from."""

from __future__ import annotations

import asyncio
import time


class RateLimiter:
    """Token bucket: at most ``rate`` tokens per second (0: unlimited). A migration takes one
    token per key it copies and one per slot it starts, so ``rate_keys_per_second`` also
    paces a migration of empty slots. A wave pays for its slots and keys (up to one second's
    worth) *before* it starts and then runs at full speed: pacing between waves, not inside
    them, keeps each slot's freeze (when its clients pay for double reads and pulls) short."""

    #: Longest sleep between two looks at the bucket, so that a new rate applies at once.
    MAX_WAIT = 0.2

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._tokens = float(rate)
        self._at = time.monotonic()
        self._lock = asyncio.Lock()

    def set_rate(self, rate: int) -> None:
        """Change the rate; a waiter sees it within MAX_WAIT (the tokens saved are kept,
        within one second's worth of the new rate)."""
        self._refill()
        self.rate = rate
        self._tokens = min(self._tokens, float(rate))

    def _refill(self) -> None:
        now = time.monotonic()
        if self.rate > 0:
            self._tokens = min(float(self.rate), self._tokens + (now - self._at) * self.rate)
        self._at = now

    async def take(self, n: int) -> None:
        if self.rate <= 0:
            return
        async with self._lock:
            while self.rate > 0:
                self._refill()
                # A batch larger than one second's worth goes through once the bucket is full.
                need = min(float(n), float(self.rate))
                if self._tokens >= need:
                    self._tokens -= n
                    return
                await asyncio.sleep(min((need - self._tokens) / self.rate, self.MAX_WAIT))
