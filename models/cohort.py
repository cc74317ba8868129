"""Simulated heart-failure patients seen through the twin, for training and evaluation.

    firmware_sim Home -> readings (minus missingness) -> offline twin filters
                      -> SimHistory (the features' PatientHistory) + the true events

The filters are the gateway's own models on the offline path (edge_twin.estimate.offline,
equal to the live filters; tests/test_offline.py), so features computed here are the
features the gateway computes from its stored twin.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edge_twin.assess.features import SIGNALS
from edge_twin.domain import Signal
from edge_twin.estimate import offline
from edge_twin.estimate.models import DEFAULT_MODELS
from edge_twin.estimate.tracker import FilterState
from firmware_sim.home import Home, SimPatient
from firmware_sim.missing import gap_mask
from firmware_sim.physiology.profile import CohortMix

DAY_S = 86400.0
# A UTC midnight: 2026-01-01.
START = 1_767_225_600.0
KINDS = ("wrist", "bp_cuff", "scale")
# Gap lengths when data is removed: the wrist band left off for hours to days, the cuff
# and the scale unused for days.
GAPS_S = {
    "wrist": (6 * 3600.0, 2 * DAY_S),
    "bp_cuff": (DAY_S, 3 * DAY_S),
    "scale": (DAY_S, 4 * DAY_S),
}


@dataclass(frozen=True)
class CohortSpec:
    """Who is simulated: a seed, a size, a mix, and how much data goes missing."""

    seed: int
    patients: int
    days: float
    mix: CohortMix = field(default_factory=lambda: CohortMix(heart_failure=1.0, diabetes=0.0))
    missing: tuple[float, ...] = (0.4,)  # each patient draws one of these levels


@dataclass
class SimHistory:
    """One simulated patient's twin: offline trajectories and step readings."""

    patient_id: str
    start: float
    end: float
    trajectories: dict[Signal, offline.Trajectory]
    step_t: np.ndarray
    step_cumsum: np.ndarray
    event_peaks: list[float]  # decompensations (admissions) inside the period
    missing: float
    weight_t: np.ndarray  # the scale's readings, for the weight rules
    weight: np.ndarray
    # what looks like a decompensation and is not: (kind, start, end), epoch s
    confounders: list[tuple[str, float, float]] = field(default_factory=list)

    def state(self, signal: Signal, t: float, *, before: bool) -> FilterState | None:
        traj = self.trajectories.get(signal)
        if traj is None:
            return None
        return traj.state_before(t) if before else traj.state_at(t)

    def steps(self, t0: float, t1: float) -> tuple[float, int]:
        i0 = int(np.searchsorted(self.step_t, t0, side="left"))
        i1 = int(np.searchsorted(self.step_t, t1, side="left"))
        return float(self.step_cumsum[i1] - self.step_cumsum[i0]), i1 - i0


def _records(
    patient: SimPatient, level: float, rng: np.random.Generator
) -> dict[Signal, tuple[np.ndarray, np.ndarray]]:
    by_signal: dict[Signal, list[tuple[float, float]]] = {}
    for device in patient.devices:
        rows = [(r[0], r[2], r[3]) for u in patient.uploads[device.device_id] for r in u.records]
        times = np.array([r[1] for r in rows])
        removed = gap_mask(times, level, *GAPS_S[device.device_type], rng)
        for (name, t, v), gone in zip(rows, removed.tolist(), strict=True):
            if not gone:
                by_signal.setdefault(Signal(name), []).append((t, v))
    out = {}
    for signal, pairs in by_signal.items():
        pairs.sort()
        arr = np.array(pairs)
        out[signal] = (arr[:, 0], arr[:, 1])
    return out


def history(spec: CohortSpec, index: int) -> SimHistory:
    home = Home(spec.patients, START, spec.days * 24, seed=spec.seed, mix=spec.mix, kinds=KINDS)
    patient = home.patient(index)
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(index, 99)))
    level = float(rng.choice(spec.missing))
    series = _records(patient, level, rng)
    trajectories = {s: offline.run(DEFAULT_MODELS[s], *series[s]) for s in SIGNALS if s in series}
    step_t, step_v = series.get(Signal.STEPS, (np.zeros(0), np.zeros(0)))
    end = START + spec.days * DAY_S
    peaks = [d.peak for d in patient.truth.decompensations if d.peak < end]
    weight_t, weight = series.get(Signal.WEIGHT, (np.zeros(0), np.zeros(0)))
    return SimHistory(
        patient.patient_id,
        START,
        end,
        trajectories,
        step_t,
        np.concatenate(([0.0], np.cumsum(step_v))),
        peaks,
        level,
        weight_t,
        weight,
        [(c.kind, c.start, c.end) for c in patient.truth.confounders],
    )
