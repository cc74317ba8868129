"""The twin's estimates against the simulator's truth, with data missing.

For a held-out simulated cohort (seeds never used elsewhere), every signal's readings are
thinned to 0/20/40/60% missing, either at random or in long gaps (1-4 h for sensors that
report every few minutes, 1-3 days for the cuff and the scale). At every original
reading time (kept or removed) the true value is compared with:

    raw     the reading itself (kept readings only: the sensor's own error)
    locf    the last kept reading (causal)
    interp  linear interpolation between kept readings (offline: it sees the future)
    twin    the gateway's filter (causal): posterior at a kept reading, prior otherwise

and the twin's 95% interval is checked for coverage. The 30-min glucose forecast is
scored against a per-patient AR(6) fitted on the first half of each patient's CGM data,
both on the second half. The twin is the gateway's own code (edge_twin.estimate).
Last line: one JSON object.

    .venv/bin/python bench/estimate.py [--patients 16] [--days 28] [--seed 9001]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass

import numpy as np

from edge_twin.domain import Reading, Signal
from edge_twin.estimate.models import DEFAULT_MODELS
from edge_twin.estimate.tracker import SignalFilter
from firmware_sim.home import Home, SimPatient
from firmware_sim.physiology.profile import CohortMix

START = 1_767_225_600.0
SIGNALS = [
    Signal.GLUCOSE,
    Signal.HEART_RATE,
    Signal.SPO2,
    Signal.RESP_RATE,
    Signal.SKIN_TEMP,
    Signal.SYSTOLIC,
    Signal.DIASTOLIC,
    Signal.WEIGHT,
]
LEVELS = (0.0, 0.2, 0.4, 0.6)
Z95 = 1.959963984540054


@dataclass
class Series:
    t: np.ndarray
    value: np.ndarray
    truth: np.ndarray
    device: str


def series(patient: SimPatient, signal: Signal) -> Series | None:
    rows = [
        (r[2], r[3], d.device_id)
        for d in patient.devices
        for u in patient.uploads[d.device_id]
        for r in u.records
        if r[0] == signal.value and not (d.device_type == "bp_cuff" and signal is Signal.HEART_RATE)
    ]
    if len(rows) < 4:
        return None
    rows.sort()
    t = np.array([r[0] for r in rows])
    truth = patient.truth.signals[signal.value]
    idx = np.clip(((t - patient.truth.start) // 60).astype(int), 0, patient.truth.minutes - 1)
    return Series(t, np.array([r[1] for r in rows]), truth[idx], rows[0][2])


def missing_mask(s: Series, level: float, gaps: bool, rng: np.random.Generator) -> np.ndarray:
    """True where a reading is removed."""
    n = len(s.t)
    if level == 0:
        return np.zeros(n, dtype=bool)
    if not gaps:
        return rng.random(n) < level
    removed = np.zeros(n, dtype=bool)
    step = float(np.median(np.diff(s.t)))
    daily = step > 6 * 3600  # cuff and scale: gaps of days, the rest: hours
    lo, hi = (86400.0, 3 * 86400.0) if daily else (3600.0, 4 * 3600.0)
    while removed.mean() < level:
        length = max(1, int(rng.uniform(lo, hi) / step))
        at = int(rng.integers(0, n))
        removed[at : at + length] = True
    return removed


def evaluate(s: Series, signal: Signal, removed: np.ndarray) -> dict[str, list[float]]:
    """Squared errors per method and coverage hits, at every reading time after the first
    kept reading."""
    kept = ~removed
    out: dict[str, list[float]] = {"raw": [], "locf": [], "interp": [], "twin": [], "hit": []}
    if kept.sum() < 2:
        return out
    interp = np.interp(s.t, s.t[kept], s.value[kept])
    model = DEFAULT_MODELS[signal]
    f: SignalFilter | None = None
    last = math.nan
    for i in range(len(s.t)):
        t, truth = float(s.t[i]), float(s.truth[i])
        if kept[i]:
            reading = Reading("p", s.device, signal, t, float(s.value[i]), t)
            if f is None:
                f = SignalFilter.start(model, reading)
            else:
                f.step(reading)
            last = float(s.value[i])
            out["raw"].append((s.value[i] - truth) ** 2)
            x, p = f.x, f.P
        elif f is None:
            continue
        else:
            x, p = f.at(t)
        mean, sd = float(x[0]), math.sqrt(float(p[0, 0]))
        out["twin"].append((mean - truth) ** 2)
        out["hit"].append(float(abs(mean - truth) <= Z95 * sd))
        out["locf"].append((last - truth) ** 2)
        out["interp"].append((interp[i] - truth) ** 2)
    return out


def glucose_forecasts(s: Series) -> tuple[list[float], list[float]]:
    """Squared 30-min forecast errors on the second half: twin, per-patient AR(6)."""
    half = s.t[0] + (s.t[-1] - s.t[0]) / 2
    model = DEFAULT_MODELS[Signal.GLUCOSE]
    # AR(6) on 5-min steps, least squares on the first half's unbroken runs.
    order, ahead = 6, 6
    contiguous = np.concatenate(([False], np.abs(np.diff(s.t) - 300) < 1))
    rows, targets = [], []
    for i in range(order, len(s.t)):
        if s.t[i] < half and contiguous[i - order + 1 : i + 1].all():
            rows.append(np.append(s.value[i - order : i][::-1], 1.0))
            targets.append(s.value[i])
    coef = np.linalg.lstsq(np.array(rows), np.array(targets), rcond=None)[0]
    truth_at = dict(zip(s.t.tolist(), s.truth.tolist(), strict=True))
    twin_err, ar_err = [], []
    f: SignalFilter | None = None
    for i in range(len(s.t)):
        t = float(s.t[i])
        reading = Reading("p", s.device, Signal.GLUCOSE, t, float(s.value[i]), t)
        f = SignalFilter.start(model, reading) if f is None else f
        if f.t < t:
            f.step(reading)
        target_t = t + 1800
        if t < half or target_t not in truth_at or i < order:
            continue
        if not contiguous[i - order + 1 : i + 1].all():
            continue
        history = list(s.value[i - order + 1 : i + 1][::-1])
        for _ in range(ahead):
            nxt = float(np.dot(coef[:-1], history[:order]) + coef[-1])
            history.insert(0, nxt)
        x, _ = f.at(target_t)
        twin_err.append((float(x[0]) - truth_at[target_t]) ** 2)
        ar_err.append((history[0] - truth_at[target_t]) ** 2)
    return twin_err, ar_err


def rmse(values: list[float]) -> float:
    return math.sqrt(sum(values) / len(values)) if values else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=16)
    parser.add_argument("--days", type=float, default=28.0)
    parser.add_argument("--seed", type=int, default=9001, help="held out: used nowhere else")
    args = parser.parse_args()
    mix = CohortMix(heart_failure=0.5, diabetes=0.75)
    home = Home(args.patients, START, args.days * 24, seed=args.seed, mix=mix)
    rng = np.random.default_rng(args.seed)
    errors: dict[tuple[str, float, bool, str], list[float]] = {}
    twin30: list[float] = []
    ar30: list[float] = []
    for i in range(args.patients):
        patient = home.patient(i)
        print(f"patient {i + 1}/{args.patients}", file=sys.stderr)
        for signal in SIGNALS:
            s = series(patient, signal)
            if s is None:
                continue
            for level in LEVELS:
                for gaps in (False, True):
                    if level == 0 and gaps:
                        continue
                    result = evaluate(s, signal, missing_mask(s, level, gaps, rng))
                    for method, values in result.items():
                        errors.setdefault((signal.value, level, gaps, method), []).extend(values)
            if signal is Signal.GLUCOSE:
                t_err, a_err = glucose_forecasts(s)
                twin30 += t_err
                ar30 += a_err

    header = ("signal", "missing", "raw", "locf", "interp", "twin", "twin/locf", "cover95")
    print("{:<11} {:<9} {:>7} {:>7} {:>7} {:>7} {:>9} {:>8}".format(*header), file=sys.stderr)
    ratios_40gap: dict[str, float] = {}
    coverages: list[float] = []
    for signal in SIGNALS:
        for level in LEVELS:
            for gaps in (False, True):
                key = (signal.value, level, gaps)
                if (*key, "twin") not in errors:
                    continue
                hits = errors[(*key, "hit")]
                if not hits:  # too few kept readings to say anything
                    continue
                r = {m: rmse(errors[(*key, m)]) for m in ("raw", "locf", "interp", "twin")}
                cover = sum(hits) / len(hits)
                coverages.append(cover)
                ratio = r["twin"] / r["locf"]
                if level == 0.4 and gaps:
                    ratios_40gap[signal.value] = ratio
                label = f"{int(level * 100)}% {'gaps' if gaps else 'rand'}"
                print(
                    f"{signal.value:<11} {label:<9} {r['raw']:7.2f} {r['locf']:7.2f}"
                    f" {r['interp']:7.2f} {r['twin']:7.2f} {ratio:9.3f} {cover:8.3f}",
                    file=sys.stderr,
                )
    worst = max(ratios_40gap, key=ratios_40gap.__getitem__, default=None)
    print(
        json.dumps(
            {
                "worst_ratio_vs_locf_40gap": None
                if worst is None
                else round(ratios_40gap[worst], 3),
                "worst_signal_40gap": worst,
                "ratios_vs_locf_40gap": {k: round(v, 3) for k, v in ratios_40gap.items()},
                "coverage95_min": round(min(coverages), 3),
                "coverage95_max": round(max(coverages), 3),
                "glucose_rmse30_twin": round(rmse(twin30), 2),
                "glucose_rmse30_ar": round(rmse(ar30), 2),
                "patients": args.patients,
                "days": args.days,
                "seed": args.seed,
            }
        )
    )


if __name__ == "__main__":
    main()
