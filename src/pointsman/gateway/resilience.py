"""Retry timing and the per-model circuit breaker (cooldown after repeated failures)."""

from __future__ import annotations

import random
import time


def backoff_delay(attempt: int, retry_after: float | None, *, base: float, cap: float, max_retry_after: float) -> float | None:
    """Seconds to wait before retry number `attempt` (0-based), or None to give up on this model.

    An upstream's Retry-After is obeyed when it is short enough to be worth waiting for; a longer
    one means "try another model now" rather than holding the client.
    """
    if retry_after is not None:
        return retry_after if retry_after <= max_retry_after else None
    # Full jitter (AWS architecture blog): spreads retries of many clients apart.
    return random.uniform(0, min(cap, base * (2**attempt)))


class CircuitBreaker:
    """Closed → open after `threshold` consecutive failures → half-open after `cooldown_s`, when one
    trial request is let through; its success closes the breaker, its failure opens it again."""

    __slots__ = ("threshold", "cooldown_s", "failures", "opened_at", "_trial_in_flight")

    def __init__(self, threshold: int, cooldown_s: float) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.failures = 0
        self.opened_at: float | None = None
        self._trial_in_flight = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if time.monotonic() - self.opened_at >= self.cooldown_s else "open"

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        if time.monotonic() - self.opened_at < self.cooldown_s or self._trial_in_flight:
            return False
        self._trial_in_flight = True
        return True

    def record_success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self._trial_in_flight = False

    def release(self) -> None:
        """The call let through ended without a verdict on the model's health (the request failed for a reason of
        its own, or was cancelled): a half-open trial is given back, so the next request can be the trial."""
        self._trial_in_flight = False

    def record_failure(self) -> None:
        self.failures += 1
        self._trial_in_flight = False
        if self.failures >= self.threshold:
            self.opened_at = time.monotonic()

    def cooldown_remaining(self) -> float:
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.cooldown_s - (time.monotonic() - self.opened_at))
