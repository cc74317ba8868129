"""Clocks. Everything that asks "what time is it" asks an injected ``Clock``.

Times are float seconds since the Unix epoch, UTC: the same scale as SenML and cheap to
compare in the hot path. ``to_datetime`` makes an aware datetime for people and APIs.

The twin runs on *event time*: estimation, staleness and alerting use the devices'
timestamps and a clock that the caller controls, so a replay of 90 days gives the same
answers as living them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
import threading
import time
from collections.abc import Callable
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

    def __init__(
        self,
        start: float,
        speed: float,
        until: float | None = None,
        wall0: float | None = None,
    ) -> None:
        """``wall0``: the time.monotonic() at which simulated time is ``start`` (default:
        now); monotonic time is the machine's, so two processes can share one clock."""
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.start = start
        self.speed = speed
        self.until = until
        self._wall0 = time.monotonic() if wall0 is None else wall0

    def now(self) -> float:
        t = self.start + (time.monotonic() - self._wall0) * self.speed
        return t if self.until is None else min(t, self.until)

    def restart(self) -> None:
        """Simulated time starts again at ``start`` from this wall-clock moment."""
        self._wall0 = time.monotonic()

    def wall_seconds_until(self, t: float) -> float:
        """How long to sleep (wall seconds) until simulated time ``t``."""
        return max(0.0, (t - self.now()) / self.speed)


# adjtimex(2): the kernel's view of NTP discipline; TIME_ERROR (5) = not synchronised.
TIME_ERROR = 5


class _Timex(ctypes.Structure):
    # struct timex starts with modes (unsigned int); the rest is read as padding.
    _fields_ = (("modes", ctypes.c_uint), ("_rest", ctypes.c_byte * 204))


@functools.cache
def _libc() -> ctypes.CDLL | None:
    # find_library may run ldconfig: once per process, not once per probe.
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None


def kernel_clock_synchronised() -> bool | None:
    """True/False from adjtimex(2) (read-only: modes 0); None where it cannot be asked."""
    libc = _libc()
    if libc is None:
        return None
    try:
        state = int(libc.adjtimex(ctypes.byref(_Timex())))
    except AttributeError:
        return None
    return None if state < 0 else state != TIME_ERROR


class ClockTrust:
    """Whether the gateway's clock may judge device times.

    A Pi has no real-time clock: booted offline it runs from the last saved time, hours
    or days behind, until NTP corrects it. Judged against such a clock, every reading
    looks "from the future". While the probe says the clock is not synchronised, the
    ingest holds such readings instead of rejecting them, and applies them once it is.
    A probe that cannot tell (None) counts as synchronised: the check stays as it was.
    The answer is cached for ``recheck_s`` (monotonic): the probe is a system call per
    batch at most.
    """

    def __init__(
        self,
        probe: Callable[[], bool | None] = kernel_clock_synchronised,
        recheck_s: float = 5.0,
    ) -> None:
        self._probe = probe
        self._recheck_s = recheck_s
        self._checked = -math.inf
        self._answer = True
        self._lock = threading.Lock()

    @classmethod
    def always(cls) -> ClockTrust:
        """For clocks the caller controls (replays, the simulator, tests)."""
        return cls(lambda: True, math.inf)

    def synchronised(self) -> bool:
        with self._lock:
            now = time.monotonic()
            if now - self._checked >= self._recheck_s:
                self._answer = self._probe() is not False
                self._checked = now
            return self._answer


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
