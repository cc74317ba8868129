"""CGM firmware: a reading every ``period_min`` with the imperfections of real sensors.

    reading_k = clip(I(t_k) (1 + drift(t_k)) + compression(t_k) + e_k, 40, 400)
    I         = interstitial glucose: G through a first-order lag, dI/dt = (G - I) / tau,
                tau drawn per sensor in ``lag_min`` (5-6 min of physiology, Basu et al.
                2013, plus the sensor's own filtering: 10-15 min in clamp studies). In a
                fast fall the sensor reads high against blood, as real ones do.
    e_k       = rho e_{k-1} + sqrt(1 - rho^2) sd n_k          AR(1), stationary SD ``sd``
    rho       = 0.7 ** (period / 15 min)   (the UVA/Padova sensor model's 15-min
                                            autocorrelation ~0.7, shared/guides/domain.md)
    drift     = per-session calibration error: N(0, 4%) at insertion, then an OU walk
    compression lows: at night, ~``compression_per_night``, the reading falls 25-60 mg/dL
                for 10-30 min and recovers (the body is fine: an ``Artefact``)

Sessions last ``session_days``; each new sensor needs ``warmup_min`` before its first
reading, after a changeover gap of up to an hour. A sample is lost with ``p_missing``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from firmware_sim.devices import Artefact, Upload
from firmware_sim.physiology.processes import Array, hour_of_day, ou


@dataclass(frozen=True)
class CgmSpec:
    period_min: int = 5
    sd: float = 10.0
    p_missing: float = 0.0
    lo: float = 40.0
    hi: float = 400.0
    session_days: float = 10.0
    warmup_min: int = 120
    drift_sd: float = 0.04
    compression_per_night: float = 0.25
    lag_min: tuple[float, float] = (5.0, 15.0)


def interstitial(glucose: Array, tau_min: float) -> Array:
    """``glucose`` (1-min grid) through dI/dt = (G - I) / tau, exact for a piecewise-constant
    input; starts at equilibrium."""
    if tau_min <= 0:
        return glucose.copy()
    a = math.exp(-1.0 / tau_min)
    out = np.empty_like(glucose)
    level = float(glucose[0]) if len(glucose) else 0.0
    for i, g in enumerate(glucose.tolist()):
        level = a * level + (1.0 - a) * g
        out[i] = level
    return out


def simulate(
    spec: CgmSpec,
    glucose: Array,
    start: float,
    rng: np.random.Generator,
    lag_min: float | None = None,
) -> tuple[list[Upload], list[Artefact], list[tuple[float, float]]]:
    """Uploads, compression-low artefacts, and the sensor sessions (start, end), epoch s.
    ``lag_min``: this sensor's lag (drawn from ``spec.lag_min`` with ``rng`` if None)."""
    minutes = len(glucose)
    if lag_min is None:
        lag_min = float(rng.uniform(*spec.lag_min))
    glucose = interstitial(glucose, lag_min)
    available = np.zeros(minutes, dtype=bool)
    drift = np.zeros(minutes)
    session_min = int(spec.session_days * 1440)
    begin = -int(rng.uniform(0, session_min))  # the first sensor was inserted earlier
    sessions: list[tuple[float, float]] = []
    while begin < minutes:
        warm = begin + spec.warmup_min
        end = begin + session_min
        sessions.append((start + begin * 60.0, start + end * 60.0))
        lo, hi = max(0, begin), min(minutes, end)
        if lo < hi:
            drift[lo:hi] = rng.normal(0, spec.drift_sd) + ou(rng, hi - lo, spec.drift_sd, 2 * 1440)
            available[max(0, warm) : hi] = True
        begin = end + int(rng.uniform(0, 60))  # changeover: the patient is not always quick

    compression = np.zeros(minutes)
    artefacts: list[Artefact] = []
    hours = hour_of_day(start, minutes)
    nights = np.flatnonzero((hours[:-1] < 1.0) & (hours[1:] >= 1.0))  # 01:00 each night
    for night in nights:
        if rng.random() < spec.compression_per_night:
            at = int(night + rng.uniform(0, 300))
            length = int(rng.uniform(10, 30))
            depth = rng.uniform(25, 60)
            lo, hi = at, min(minutes, at + length)
            if lo < hi:
                ramp = np.sin(np.pi * np.arange(hi - lo) / length)  # falls, then recovers
                compression[lo:hi] -= depth * ramp
                artefacts.append(
                    Artefact("cgm_compression_low", start + lo * 60.0, start + hi * 60.0)
                )

    rho = 0.7 ** (spec.period_min / 15.0)
    innovation_sd = spec.sd * math.sqrt(1 - rho * rho)
    error = rng.normal(0, spec.sd)
    uploads: list[Upload] = []
    seq = 0
    for minute in range(0, minutes, spec.period_min):
        error = rho * error + rng.normal(0, innovation_sd)
        if not available[minute]:
            continue
        seq += 1  # the firmware counts every sample it takes, sent or lost
        if rng.random() < spec.p_missing:
            continue
        measured = glucose[minute] * (1 + drift[minute]) + compression[minute] + error
        value = round(min(spec.hi, max(spec.lo, float(measured))), 1)
        t = start + minute * 60.0
        uploads.append(Upload(t, [("glucose", "mg/dL", t, value, seq)]))
    return uploads, artefacts, sessions
