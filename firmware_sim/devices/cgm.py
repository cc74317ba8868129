"""CGM firmware: samples the true glucose every ``period_min`` with correlated error.

    reading_k = clip(G(t_k) + e_k, 40, 400)
    e_k       = rho * e_{k-1} + sqrt(1 - rho^2) * sd * n_k       AR(1), stationary SD ``sd``

rho = 0.7 ** (period / 15 min): the 15-minute autocorrelation of ~0.7 of the UVA/Padova
sensor model (shared/guides/domain.md). A sample is lost with probability ``p_missing``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class CgmSpec:
    period_min: int = 5
    sd: float = 10.0
    p_missing: float = 0.0
    lo: float = 40.0
    hi: float = 400.0


@dataclass(frozen=True)
class Sample:
    t: float
    value: float
    seq: int
    truth: float


def sample(
    spec: CgmSpec,
    truth_per_min: npt.NDArray[np.float64],
    start: float,
    rng: np.random.Generator,
    first_seq: int = 0,
) -> list[Sample]:
    rho = 0.7 ** (spec.period_min / 15.0)
    innovation_sd = spec.sd * math.sqrt(1 - rho * rho)
    error = rng.normal(0, spec.sd)
    out: list[Sample] = []
    seq = first_seq
    for minute in range(0, len(truth_per_min), spec.period_min):
        error = rho * error + rng.normal(0, innovation_sd)
        seq += 1  # the firmware counts every sample it takes, sent or lost
        if rng.random() < spec.p_missing:
            continue
        truth = float(truth_per_min[minute])
        value = round(min(spec.hi, max(spec.lo, truth + error)), 1)
        out.append(Sample(start + minute * 60.0, value, seq, truth))
    return out
