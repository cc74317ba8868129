"""Clocks. Everything that asks "what time is it" asks an injected ``Clock``.

Times are float seconds since the Unix epoch, UTC: the same scale as SenML and cheap to
compare in the hot path. ``to_datetime`` makes an aware datetime for people and APIs.

The twin runs on *event time*: estimation, staleness and alerting use the devices'
timestamps and a clock that the caller controls, so a replay of 90 days gives the same
answers as living them.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch, UTC."""
        ...


class SystemClock:
    """Wall-clock time."""

    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that moves only when told to: for tests and replays."""

    def __init__(self, start: float) -> None:
        self._t = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._t

    def set(self, t: float) -> None:
        with self._lock:
            self._t = t

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._t += seconds

    def advance_to(self, t: float) -> None:
        """Move forward to ``t``; never backwards (late events do not rewind time)."""
        with self._lock:
            self._t = max(self._t, t)


class AcceleratedClock:
    """Simulated time that runs ``speed`` times faster than the wall clock from ``start``.

    The demo's simulator and gateway share one, so device timestamps and the gateway's
    notion of "now" agree while hours pass in seconds. With ``until``, time stops there
    (the end of a simulated period), so the results stay readable afterwards.
    """

    def __init__(self, start: float, speed: float, until: float | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.start = start
        self.speed = speed
        self.until = until
        self._wall0 = time.monotonic()

    def now(self) -> float:
        t = self.start + (time.monotonic() - self._wall0) * self.speed
        return t if self.until is None else min(t, self.until)

    def restart(self) -> None:
        """Simulated time starts again at ``start`` from this wall-clock moment."""
        self._wall0 = time.monotonic()

    def wall_seconds_until(self, t: float) -> float:
        """How long to sleep (wall seconds) until simulated time ``t``."""
        return max(0.0, (t - self.now()) / self.speed)


def to_datetime(t: float) -> datetime:
    """Epoch seconds -> aware UTC datetime."""
    return datetime.fromtimestamp(t, tz=UTC)


def parse_time(text: str) -> float:
    """ISO 8601 with an explicit offset (``2026-01-01T00:00Z``) or epoch seconds -> epoch
    seconds. A time without an offset is refused: it would mean the machine's zone."""
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise ValueError(f"{text!r} is not an ISO 8601 time or epoch seconds")
        return value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time or epoch seconds") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset: write it as {text}Z or {text}+00:00")
    return parsed.timestamp()


def to_iso(t: float) -> str:
    """Epoch seconds -> ISO 8601 with an explicit UTC offset."""
    return to_datetime(t).isoformat(timespec="milliseconds")
