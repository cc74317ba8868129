"""State-space models of each signal, with their equations. Time unit: minutes.

Every model is linear-Gaussian, x' = F(dt) x + w, w ~ N(0, Q(dt)); z = H x + v, v ~ N(0, R).
filterpy's ``predict`` / ``update`` do the algebra; here are only the matrices.

Damped-trend model (glucose), x = [level (mg/dL), rate (mg/dL/min)]:
    The rate is an Ornstein-Uhlenbeck process with time constant tau: trends fade, so a
    long gap does not extrapolate a meal's rise forever.
        a        = exp(-dt / tau)
        F(dt)    = [[1, tau (1 - a)],
                    [0, a          ]]
        Q(dt)    = diag(q_level dt,  sigma_rate^2 (1 - a^2))
    (the level noise is a random walk; the rate noise keeps its stationary variance
    sigma_rate^2; the small level/rate cross term of the exact discretisation is dropped.)
        H = [1, 0],  R = r^2

Level model (all other signals), x = [level]:
        F = 1,  Q(dt) = q dt,  H = 1,  R = r^2
    The variance of the level grows linearly through a gap: the longer nothing is seen,
    the less the twin claims to know.

Defaults (``DEFAULT_MODELS``) come from device accuracy and physiology (docs/estimation.md):
r is the sensor's error SD, q the physiological drift per minute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge_twin.domain import Signal

Matrix = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class SignalModel:
    name: str
    version: str
    dim: int
    r: float  # measurement error SD, canonical unit
    q_level: float  # level random-walk variance per minute
    sigma_rate: float = 0.0  # damped-trend only: stationary SD of the rate (unit/min)
    tau_min: float = 1.0  # damped-trend only: time constant of the rate (min)
    initial_rate_sd: float = 0.0
    forecast_horizons_min: tuple[float, ...] = (60.0,)

    @property
    def has_rate(self) -> bool:
        return self.dim == 2

    def F(self, dt: float) -> Matrix:
        if not self.has_rate:
            return np.array([[1.0]])
        a = math.exp(-dt / self.tau_min)
        return np.array([[1.0, self.tau_min * (1.0 - a)], [0.0, a]])

    def Q(self, dt: float) -> Matrix:
        if not self.has_rate:
            return np.array([[self.q_level * dt]])
        a = math.exp(-dt / self.tau_min)
        return np.diag([self.q_level * dt, self.sigma_rate**2 * (1.0 - a * a)])

    def H(self) -> Matrix:
        return np.array([[1.0, 0.0]]) if self.has_rate else np.array([[1.0]])

    def R(self) -> Matrix:
        return np.array([[self.r**2]])

    def initial(self, z: float) -> tuple[Matrix, Matrix]:
        """First measurement: level = z with the sensor's uncertainty; rate 0 +/- prior."""
        if not self.has_rate:
            return np.array([z]), np.array([[self.r**2]])
        return np.array([z, 0.0]), np.diag([self.r**2, self.initial_rate_sd**2])


GLUCOSE_HORIZONS_MIN = tuple(float(m) for m in range(5, 65, 5))

DEFAULT_MODELS: dict[Signal, SignalModel] = {
    # CGM MARD ~9% -> ~10 mg/dL SD at typical levels; rates rarely exceed 3 mg/dL/min.
    Signal.GLUCOSE: SignalModel(
        "glucose-damped-trend",
        "1",
        dim=2,
        r=10.0,
        q_level=0.5,
        sigma_rate=1.0,
        tau_min=20.0,
        initial_rate_sd=1.0,
        forecast_horizons_min=GLUCOSE_HORIZONS_MIN,
    ),
    Signal.HEART_RATE: SignalModel("level-rw", "1", 1, r=3.0, q_level=2.0),
    Signal.SPO2: SignalModel("level-rw", "1", 1, r=1.0, q_level=0.05),
    Signal.RESP_RATE: SignalModel("level-rw", "1", 1, r=1.5, q_level=0.1),
    Signal.SKIN_TEMP: SignalModel("level-rw", "1", 1, r=0.3, q_level=0.005),
    Signal.STEPS: SignalModel("level-rw", "1", 1, r=20.0, q_level=50.0),
    # ISO 81060-2 cuffs: SD <= 8 mmHg; day-to-day SD 8.6 / 5.8 mmHg -> q = SD^2 / 1440 min.
    Signal.SYSTOLIC: SignalModel("level-rw", "1", 1, r=7.0, q_level=8.6**2 / 1440),
    Signal.DIASTOLIC: SignalModel("level-rw", "1", 1, r=5.0, q_level=5.8**2 / 1440),
    # Scale: clothing and hydration ~0.3 kg; true weight drifts ~0.3 kg a day.
    Signal.WEIGHT: SignalModel(
        "level-rw", "1", 1, r=0.3, q_level=0.3**2 / 1440, forecast_horizons_min=(1440.0,)
    ),
}
