"""State-space models of each signal, with their equations. Time unit: minutes.

Every model is linear-Gaussian, x' = F(dt) x + w, w ~ N(0, Q(dt)); z = H x + v, v ~ N(0, R).
filterpy's ``predict`` / ``update`` do the algebra; here are only the matrices.

The state is built from blocks, in this order: a level (always), a rate (damped-trend
models), a sensor error (sensors whose error is correlated in time), a personal baseline
(models whose level returns to the person's own normal).

Level: a random walk, variance q_level per minute:
        F = 1,  Q(dt) = q_level dt
    Its variance grows linearly through a gap: the longer nothing is seen, the less the
    twin claims to know.
  With a personal baseline, the level is instead an Ornstein-Uhlenbeck process around it,
  stationary SD level_sd, time constant revert_tau:
        m = exp(-dt / revert_tau)
        F[level, level] = m,  F[level, base] = 1 - m,  Q[level] = level_sd^2 (1 - m^2)
    so through a long gap the estimate returns to the person's normal (not to the last
    reading) and its uncertainty to level_sd. The baseline is a slow random walk,
    Q[base] = q_base dt, learned by the filter from the person's own readings.

Rate (glucose): an Ornstein-Uhlenbeck process with time constant tau, so trends fade and
a long gap does not extrapolate a meal's rise forever:
        a = exp(-dt / tau)
        F[level, rate] = tau (1 - a),  F[rate, rate] = a,  Q[rate] = sigma_rate^2 (1 - a^2)
    (the small level/rate cross term of the exact discretisation is dropped.)

Sensor error (CGM): AR(1) with stationary SD sensor_sd and time constant sensor_tau:
        b = exp(-dt / sensor_tau),  F[err, err] = b,  Q[err] = sensor_sd^2 (1 - b^2)
    The reading is the level plus this error plus white noise r:
        H = [1, 0, 1],  R = r^2
    A filter that treats correlated error as white noise neither smooths it nor covers the
    truth with its intervals (bench/estimate.py measured coverage ~0.67 for glucose); one
    that carries it as a state separates a persistent sensor offset from a real change.
    The estimate reported is the level, without the sensor's error.

Defaults (``DEFAULT_MODELS``) come from device accuracy and physiology (docs/estimation.md):
r is the sensor's error SD, q the physiological drift per minute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from edge_twin.domain import Signal

Matrix = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class SignalModel:
    name: str
    version: str
    r: float  # white measurement error SD, canonical unit
    q_level: float  # level random-walk variance per minute
    sigma_rate: float = 0.0  # > 0: a damped rate state, this stationary SD (unit/min)
    tau_min: float = 1.0  # the rate's time constant (min)
    initial_rate_sd: float = 0.0
    sensor_sd: float = 0.0  # > 0: an AR(1) sensor-error state, this stationary SD
    sensor_tau_min: float = 1.0  # the sensor error's time constant (min)
    level_sd: float = 0.0  # > 0: a personal-baseline state; the level's SD around it
    revert_tau_min: float = 1.0  # how fast the level returns to the baseline (min)
    q_base: float = 0.0  # the baseline's random-walk variance per minute
    forecast_horizons_min: tuple[float, ...] = (60.0,)

    @property
    def has_rate(self) -> bool:
        return self.sigma_rate > 0

    @property
    def has_sensor_error(self) -> bool:
        return self.sensor_sd > 0

    @property
    def has_baseline(self) -> bool:
        return self.level_sd > 0

    @property
    def dim(self) -> int:
        return 1 + self.has_rate + self.has_sensor_error + self.has_baseline

    @property
    def _err(self) -> int:
        return 1 + self.has_rate  # index of the sensor-error state, when there is one

    @property
    def _base(self) -> int:
        return self.dim - 1  # index of the baseline state, when there is one

    # The matrices are cached, read-only: readings come at a few fixed intervals, and
    # building them was a fifth of the filter's time. (The model is frozen, so hashable.)
    def F(self, dt: float) -> Matrix:
        return _frozen_matrix(self, "F", dt)

    def Q(self, dt: float) -> Matrix:
        return _frozen_matrix(self, "Q", dt)

    def H(self) -> Matrix:
        return _frozen_matrix(self, "H", 0.0)

    def R(self) -> Matrix:
        return _frozen_matrix(self, "R", 0.0)

    def _F(self, dt: float) -> Matrix:
        f = np.eye(self.dim)
        if self.has_rate:
            a = math.exp(-dt / self.tau_min)
            f[0, 1] = self.tau_min * (1.0 - a)
            f[1, 1] = a
        if self.has_sensor_error:
            f[self._err, self._err] = math.exp(-dt / self.sensor_tau_min)
        if self.has_baseline:
            m = math.exp(-dt / self.revert_tau_min)
            f[0, 0] = m
            f[0, self._base] = 1.0 - m
        return f

    def _Q(self, dt: float) -> Matrix:
        if self.has_baseline:
            m = math.exp(-dt / self.revert_tau_min)
            q = [self.level_sd**2 * (1.0 - m * m)]
        else:
            q = [self.q_level * dt]
        if self.has_rate:
            a = math.exp(-dt / self.tau_min)
            q.append(self.sigma_rate**2 * (1.0 - a * a))
        if self.has_sensor_error:
            b = math.exp(-dt / self.sensor_tau_min)
            q.append(self.sensor_sd**2 * (1.0 - b * b))
        if self.has_baseline:
            q.append(self.q_base * dt)
        return np.diag(q)

    def _H(self) -> Matrix:
        h = np.zeros((1, self.dim))
        h[0, 0] = 1.0
        if self.has_sensor_error:
            h[0, self._err] = 1.0
        return h

    def _R(self) -> Matrix:
        return np.array([[self.r**2]])

    def initial(self, z: float) -> tuple[Matrix, Matrix]:
        """First measurement z = level + error + noise: level = z with the sensor's whole
        uncertainty; rate 0 +/- its prior; the error 0 +/- its SD, anti-correlated with
        the level (whatever error there is, the level is z minus it)."""
        x = np.zeros(self.dim)
        x[0] = z
        p = np.zeros((self.dim, self.dim))
        p[0, 0] = self.r**2 + self.sensor_sd**2
        if self.has_rate:
            p[1, 1] = self.initial_rate_sd**2
        if self.has_sensor_error:
            e = self._err
            p[e, e] = self.sensor_sd**2
            p[0, e] = p[e, 0] = -(self.sensor_sd**2)
        if self.has_baseline:
            # The person's normal is near this first reading, give or take level_sd.
            x[self._base] = z
            p[self._base, self._base] = self.level_sd**2
        return x, p


@lru_cache(maxsize=1024)
def _frozen_matrix(model: SignalModel, which: str, dt: float) -> Matrix:
    if which == "F":
        m = model._F(dt)
    elif which == "Q":
        m = model._Q(dt)
    else:
        m = model._H() if which == "H" else model._R()
    m.setflags(write=False)  # shared by every filter of the model: nobody may change it
    return m


def _baseline(
    name: str, r: float, level_sd: float, tau: float, drift: float, version: str = "1"
) -> SignalModel:
    """A level around a personal baseline that drifts by ``drift`` (SD) a day."""
    return SignalModel(
        name,
        version,
        r=r,
        q_level=0.0,
        level_sd=level_sd,
        revert_tau_min=tau,
        q_base=drift**2 / 1440,
    )


GLUCOSE_HORIZONS_MIN = tuple(float(m) for m in range(5, 65, 5))

DEFAULT_MODELS: dict[Signal, SignalModel] = {
    # CGM error: AR(1), SD ~10 mg/dL, 15-min autocorrelation ~0.7 (the UVA/Padova sensor
    # model, shared/guides/domain.md) -> tau = 15 / -ln(0.7) = 42 min; a little white noise
    # on top. Rates rarely exceed 3 mg/dL/min. v3: SD 12, for the sensor's per-session
    # calibration drift too (~4%, ~6 mg/dL): v2's SD 10 covered the truth 0.87-0.89 of the
    # time with nearly all readings there, v3 0.94-0.97 (bench/estimate.py).
    Signal.GLUCOSE: SignalModel(
        "glucose-damped-trend-ar-sensor",
        "3",
        r=2.0,
        q_level=0.5,
        sigma_rate=1.0,
        tau_min=20.0,
        initial_rate_sd=1.0,
        sensor_sd=12.0,
        sensor_tau_min=15.0 / -math.log(0.7),
        level_sd=40.0,
        revert_tau_min=90.0,
        q_base=10.0**2 / 1440,
        forecast_horizons_min=GLUCOSE_HORIZONS_MIN,
    ),
    # Vital signs return to the person's own normal: level_sd is the spread around it over
    # a day (sleep, activity), revert_tau how long a departure lasts.
    # Wrist optical HR ~2 /min at rest; RR ~1 /min (device specifications' order).
    # v2 of HR and RR: r 1.8 / 0.9, level SD 6 / 1.15 (v1: 2 / 1 and 8 / 1.5 covered the
    # truth 0.97-0.99 of the time; v2 0.94-0.97, tuned on seed 4242, bench/estimate.py).
    Signal.HEART_RATE: _baseline(
        "hr-baseline", r=1.8, level_sd=6.0, tau=60.0, drift=5.0, version="2"
    ),
    Signal.SPO2: _baseline("spo2-baseline", r=1.0, level_sd=1.5, tau=120.0, drift=1.0),
    Signal.RESP_RATE: _baseline(
        "rr-baseline", r=0.9, level_sd=1.15, tau=120.0, drift=1.0, version="2"
    ),
    # v2: level SD 0.4 (0.5 over-covered: 0.98).
    Signal.SKIN_TEMP: _baseline(
        "temp-baseline", r=0.3, level_sd=0.4, tau=180.0, drift=0.3, version="2"
    ),
    Signal.STEPS: SignalModel("level-rw", "1", r=20.0, q_level=50.0),
    # ISO 81060-2 cuffs: SD <= 8 mmHg; day-to-day SD 8.6 / 5.8 mmHg around the person's
    # own level, which itself moves slowly (treatment, season).
    Signal.SYSTOLIC: _baseline("bp-baseline", r=7.0, level_sd=8.6, tau=720.0, drift=3.0),
    Signal.DIASTOLIC: _baseline("bp-baseline", r=5.0, level_sd=5.8, tau=720.0, drift=2.0),
    # Scale: weighed in clothes on some days (+0.3-1.5 kg) and hydration: ~0.6 kg; true
    # weight drifts ~0.3 kg a day. No baseline: a decompensation's gain must show, not
    # be pulled back toward the person's usual weight.
    Signal.WEIGHT: SignalModel(
        "level-rw", "2", r=0.6, q_level=0.3**2 / 1440, forecast_horizons_min=(1440.0,)
    ),
}
