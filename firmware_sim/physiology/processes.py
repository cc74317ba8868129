"""Random processes shared by the physiology models (1-minute grid, seeded generators)."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy.signal import lfilter

Array = npt.NDArray[np.float64]


def ou(rng: np.random.Generator, n: int, sd: float, tau_min: float) -> Array:
    """Ornstein-Uhlenbeck process, stationary SD ``sd``, time constant ``tau_min``:
    x[k] = a x[k-1] + sqrt(1 - a^2) sd e[k], a = exp(-1 / tau), started stationary."""
    a = math.exp(-1.0 / tau_min)
    shocks = rng.normal(0.0, sd * math.sqrt(1.0 - a * a), n)
    shocks[0] = rng.normal(0.0, sd)
    return np.asarray(lfilter([1.0], [1.0, -a], shocks), dtype=float)


def bump(u: Array) -> Array:
    """u * exp(1 - u) for u >= 0: rises to 1 at u = 1, back near 0 by u ~ 5."""
    return np.where(u >= 0, u * np.exp(1.0 - np.maximum(u, 0.0)), 0.0)


def add_bump(x: Array, at: float, width: float, amplitude: float, smooth: bool = False) -> None:
    """x += amplitude * bump((t - at) / width), in place, only where it is not ~0
    (bump < 1e-3 beyond 10 widths): a meal costs a few hundred minutes, not 90 days.
    ``smooth``: the bump squared (u^2 e^(2(1-u))), which starts with zero slope and peaks
    at the same time: its steepest slope is 1.7 x amplitude / width instead of e x."""
    lo = max(0, int(np.floor(at)) + 1)
    hi = min(len(x), int(np.ceil(at + 10.0 * width)))
    if lo < hi:
        shape = bump((np.arange(lo, hi, dtype=float) - at) / width)
        x[lo:hi] += amplitude * (shape * shape if smooth else shape)


def smooth(x: Array, minutes: int) -> Array:
    """Trailing mean over ``minutes`` (what the body 'remembers' of recent activity)."""
    kernel = np.ones(minutes) / minutes
    return np.convolve(x, kernel)[: len(x)]


def hour_of_day(start: float, n: int) -> Array:
    """Hour of day (UTC taken as local time) of each minute from ``start``."""
    return np.asarray(((start / 60.0 + np.arange(n)) % 1440.0) / 60.0, dtype=float)


def night_weight(hours: Array, wake_h: float, sleep_h: float) -> Array:
    """1 while asleep, 0 while awake, with 30-min ramps at waking and falling asleep."""
    awake = np.clip((hours - wake_h) * 2.0, 0.0, 1.0) * np.clip((sleep_h - hours) * 2.0, 0.0, 1.0)
    return 1.0 - awake
