"""The twin's filters run over a whole recorded series at once, in plain floats.

Training the risk model (models/) and benchmarking it means running the twin over months
of minute-by-minute readings for hundreds of patients; filterpy costs ~35 us per reading
here, this path ~1.5 us. It is the same arithmetic as ``tracker.SignalFilter``: the same
``SignalModel`` matrices written out for one state (a level random walk) or two (a level
around a personal baseline), the same innovation gate with the same persistence restart,
the same treatment of readings at equal times. tests/test_offline.py checks that both give
the same states to 1e-9 on simulated series, so a model trained on this path sees the
numbers the gateway's filters will give it.

Glucose's four-state model is not written out here: the risk model does not read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge_twin.estimate.models import SignalModel
from edge_twin.estimate.tracker import GATE_D2, GATE_PERSIST_S, FilterState

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Trajectory:
    """The filter after each reading of a series (gated readings included: there the
    posterior is the prior, as in the live filter)."""

    model: SignalModel
    t: FloatArray
    x: FloatArray  # (n, dim)
    p: FloatArray  # (n, dim, dim)
    n_measurements: npt.NDArray[np.int64]
    last_measured_at: FloatArray

    def state_before(self, t: float) -> FilterState | None:
        """The state at ``t`` from the readings strictly before ``t`` (None: none yet).
        A day-start snapshot of the live twin is exactly this (tracker.DaySnapshot)."""
        i = int(np.searchsorted(self.t, t, side="left")) - 1
        return self._predicted(i, t)

    def state_at(self, t: float) -> FilterState | None:
        """The state at ``t`` from the readings at or before ``t``."""
        i = int(np.searchsorted(self.t, t, side="right")) - 1
        return self._predicted(i, t)

    def _predicted(self, i: int, t: float) -> FilterState | None:
        if i < 0:
            return None
        x, p = self.x[i], self.p[i]
        dt_min = (t - self.t[i]) / 60.0
        if dt_min > 0:
            f = self.model.F(dt_min)
            x = f @ x
            p = f @ p @ f.T + self.model.Q(dt_min)
        return FilterState(t, x, p, int(self.n_measurements[i]), float(self.last_measured_at[i]))


def run(model: SignalModel, t: FloatArray, z: FloatArray) -> Trajectory:
    """The filter over readings (t ascending, epoch s; z in the model's unit)."""
    if model.has_rate or model.has_sensor_error:
        raise ValueError(f"{model.name}: the offline path covers level and baseline models only")
    n = len(t)
    dim = model.dim
    xs = np.empty((n, dim))
    ps = np.empty((n, dim, dim))
    counts = np.empty(n, dtype=np.int64)
    measured = np.empty(n)
    r2 = model.r**2
    base = model.has_baseline
    tau, level_var, q_base, q_level = model.revert_tau_min, model.level_sd**2, model.q_base, 0.0
    if not base:
        q_level = model.q_level

    def initial(value: float) -> tuple[float, float, float, float, float]:
        # (level, baseline, P00, P01, P11), as SignalModel.initial
        return value, value, r2, 0.0, level_var

    level = b = a = c = d = 0.0
    t_prev = math.nan
    count = 0
    last = math.nan
    gated_since: float | None = None
    for i in range(n):
        ti, zi = float(t[i]), float(z[i])
        if i == 0:
            level, b, a, c, d = initial(zi)
            count, last = 1, ti
        else:
            dt = (ti - t_prev) / 60.0
            if dt > 0:
                if base:
                    m = math.exp(-dt / tau)
                    level, a, c, d = (
                        m * level + (1.0 - m) * b,
                        m * m * a
                        + 2.0 * m * (1.0 - m) * c
                        + (1.0 - m) ** 2 * d
                        + level_var * (1.0 - m * m),
                        m * c + (1.0 - m) * d,
                        d + q_base * dt,
                    )
                else:
                    a += q_level * dt
            y = zi - level
            s = a + r2
            accept = True
            if y * y / s > GATE_D2:
                if gated_since is None:
                    gated_since = ti
                if ti - gated_since < GATE_PERSIST_S:
                    accept = False
                else:
                    level, b, a, c, d = initial(zi)
            else:
                k0, k1 = a / s, c / s
                level += k0 * y
                b += k1 * y
                a, c, d = a - k0 * a, c - k0 * c, d - k1 * c
            if accept:
                gated_since = None
                count += 1
                last = ti
        t_prev = ti
        xs[i, 0] = level
        ps[i, 0, 0] = a
        if base:
            xs[i, 1] = b
            ps[i, 0, 1] = ps[i, 1, 0] = c
            ps[i, 1, 1] = d
        counts[i] = count
        measured[i] = last
    return Trajectory(model, np.asarray(t, dtype=float), xs, ps, counts, measured)
