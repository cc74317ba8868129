"""How a decompensation score is judged: as clinicians meet it, alert by alert.

Each patient is evaluated once a day (EVAL_HOUR UTC, after the morning measurements).
An alert *starts* when the score reaches the threshold while the patient is not already
in alert; the alert state ends after CLEAR_DAYS days in a row below it (hysteresis in time,
so one episode is one alert, as HeartLogic's alert state).

    true alert      an admission follows within WINDOW_DAYS of the alert's start
    false alert     none does (alerts starting in the last WINDOW_DAYS of follow-up are
                    not judged: their event could lie after the period)
    detected event  an alert started within WINDOW_DAYS before it; lead = peak - the
                    earliest such start
    follow-up       evaluated days, excluding RECOVERY_DAYS after each admission (the
                    patient is in hospital care) and the first WARMUP_DAYS (no history)

Per-sample metrics use the model's own horizon: label = an admission within HORIZON_DAYS.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata

from models.cohort import DAY_S, SimHistory

EVAL_HOUR = 10.0
HORIZON_DAYS = 21.0
WINDOW_DAYS = 30.0
RECOVERY_DAYS = 10.0
WARMUP_DAYS = 28
CLEAR_DAYS = 3

FloatArray = npt.NDArray[np.float64]


@dataclass
class PatientScores:
    """One patient's daily scores and what happened."""

    t: FloatArray
    score: FloatArray
    label: npt.NDArray[np.bool_]
    peaks: list[float]
    end: float


def eval_times(h: SimHistory) -> FloatArray:
    """The daily evaluation times, follow-up only."""
    days = np.arange(WARMUP_DAYS, int((h.end - h.start) / DAY_S))
    t = h.start + days * DAY_S + EVAL_HOUR * 3600.0
    return np.asarray(t[[not in_recovery(h, x) and x < h.end for x in t]], dtype=float)


def in_recovery(h: SimHistory, t: float) -> bool:
    return any(p <= t < p + RECOVERY_DAYS * DAY_S for p in h.event_peaks)


def label(h: SimHistory, t: float, horizon_days: float = HORIZON_DAYS) -> bool:
    return any(t < p <= t + horizon_days * DAY_S for p in h.event_peaks)


def score_patient(
    h: SimHistory, scorer: Callable[[SimHistory, FloatArray], FloatArray]
) -> PatientScores:
    t = eval_times(h)
    return PatientScores(
        t, scorer(h, t), np.array([label(h, x) for x in t], dtype=bool), h.event_peaks, h.end
    )


def alert_starts(t: FloatArray, score: FloatArray, threshold: float) -> list[float]:
    starts: list[float] = []
    active, below = False, 0
    for ti, s in zip(t.tolist(), score.tolist(), strict=True):
        if s >= threshold:
            below = 0
            if not active:
                starts.append(ti)
                active = True
        elif active:
            below += 1
            if below >= CLEAR_DAYS:
                active = False
    return starts


@dataclass(frozen=True)
class AlertMetrics:
    threshold: float
    sensitivity: float
    events: int
    detected: int
    false_alerts_per_patient_year: float
    true_alerts: int
    false_alerts: int
    median_lead_days: float
    judged_years: float = math.nan  # the follow-up on which alerts were judged
    leads_days: tuple[float, ...] = ()


def alert_metrics(patients: Sequence[PatientScores], threshold: float) -> AlertMetrics:
    return metrics_of_starts(
        patients, [alert_starts(p.t, p.score, threshold) for p in patients], threshold
    )


def false_starts(p: PatientScores, starts: Sequence[float]) -> list[float]:
    """The alerts no admission followed within WINDOW_DAYS (those starting in the last
    WINDOW_DAYS of follow-up are not judged)."""
    window = WINDOW_DAYS * DAY_S
    return [
        s
        for s in starts
        if not any(s <= peak <= s + window for peak in p.peaks) and s < p.end - window
    ]


# A confounder explains a false alert that starts from this long before it begins to this
# long after it ends (a twin's multi-day features carry it for days).
CAUSE_BEFORE_S = 2 * DAY_S
CAUSE_AFTER_S = 7 * DAY_S
CAUSE_ORDER = (
    "infection",
    "post_discharge",
    "scale_change",
    "holiday",
    "subclinical_congestion",
)


def _cause(t: float, mimics: Sequence[tuple[str, float, float]]) -> str:
    near = {k for k, a, b in mimics if a - CAUSE_BEFORE_S <= t <= b + CAUSE_AFTER_S}
    return next((k for k in CAUSE_ORDER if k in near), "none")


def false_alert_causes(
    patients: Sequence[PatientScores],
    all_starts: Sequence[Sequence[float]],
    confounders: Sequence[Sequence[tuple[str, float, float]]],
) -> tuple[dict[str, int], dict[str, float]]:
    """How many false alerts each labelled confounder explains (the first in CAUSE_ORDER
    that overlaps; ``none`` when no label does), and, for comparison, the share of all
    judged evaluation days the same rule gives each cause: what a false alert placed at
    random would be attributed to."""
    causes = dict.fromkeys((*CAUSE_ORDER, "none"), 0)
    days = dict.fromkeys((*CAUSE_ORDER, "none"), 0)
    window = WINDOW_DAYS * DAY_S
    for p, starts, mimics in zip(patients, all_starts, confounders, strict=True):
        for s in false_starts(p, starts):
            causes[_cause(s, mimics)] += 1
        for t in p.t.tolist():
            if t < p.end - window:
                days[_cause(t, mimics)] += 1
    total = sum(days.values())
    return causes, {k: round(v / total, 3) if total else math.nan for k, v in days.items()}


def metrics_of_starts(
    patients: Sequence[PatientScores], all_starts: Sequence[Sequence[float]], threshold: float
) -> AlertMetrics:
    """Alerts judged as the module says, from when each patient's alerts started."""
    window = WINDOW_DAYS * DAY_S
    events = detected = true = false = 0
    leads: list[float] = []
    judged_days = 0.0
    for p, starts in zip(patients, all_starts, strict=True):
        if len(p.t) == 0:
            continue
        first_eval = float(p.t[0])
        for peak in p.peaks:
            if peak < first_eval + HORIZON_DAYS * DAY_S:
                continue  # too early in follow-up to be predicted
            events += 1
            before = [s for s in starts if peak - window <= s < peak]
            if before:
                detected += 1
                leads.append((peak - min(before)) / DAY_S)
        wrong = false_starts(p, starts)
        false += len(wrong)
        true += sum(1 for s in starts if any(s <= peak <= s + window for peak in p.peaks))
        judged_days += float(np.sum(p.t < p.end - window))
    years = judged_days / 365.25
    return AlertMetrics(
        threshold,
        detected / events if events else math.nan,
        events,
        detected,
        false / years if years else math.nan,
        true,
        false,
        float(np.median(leads)) if leads else math.nan,
        years,
        tuple(leads),
    )


def threshold_for(patients: Sequence[PatientScores], max_false_per_year: float) -> AlertMetrics:
    """The lowest threshold whose false alerts per patient-year stay within the budget
    (the most sensitive operating point the budget allows)."""
    scores = np.unique(np.concatenate([p.score for p in patients if len(p.score)]))
    candidates = np.quantile(scores, np.linspace(0.5, 1.0, 201))
    best = alert_metrics(patients, float(np.inf))
    for thr in np.unique(candidates)[::-1]:
        m = alert_metrics(patients, float(thr))
        if m.false_alerts_per_patient_year > max_false_per_year:
            break
        best = m
    return best


def auroc(score: FloatArray, label: npt.NDArray[np.bool_]) -> float:
    """Mann-Whitney: the probability a positive sample scores above a negative one."""
    pos, neg = score[label], score[~label]
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    ranks = rankdata(np.concatenate([pos, neg]))  # ties share their mean rank
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def expected_calibration_error(
    p: FloatArray, label: npt.NDArray[np.bool_], bins: int = 10
) -> float:
    """Mean |observed - predicted| over equal-width probability bins, weighted by size."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    err = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            err += sel.mean() * abs(float(label[sel].mean()) - float(p[sel].mean()))
    return err


# --- the rules clinicians use today, on the scale's raw readings -------------------------


def _daily_weights(h: SimHistory, t: float, days: int) -> FloatArray:
    """The last weighing of each of the ``days`` days up to t (NaN: no weighing)."""
    out = np.full(days, np.nan)
    for k in range(days):
        lo, hi = t - (k + 1) * DAY_S, t - k * DAY_S
        sel = (h.weight_t >= lo) & (h.weight_t < hi)
        if sel.any():
            out[days - 1 - k] = h.weight[sel][-1]
    return out


def rule_of_thumb(h: SimHistory, t: FloatArray) -> FloatArray:
    """Score >= 1 is the rule (3 lb in a day or 5 lb in 3 days: 1.4 kg / 2.3 kg): the
    larger of the 1-day gain / 1.4 and the 3-day gain / 2.3."""
    out = np.zeros(len(t))
    for i, ti in enumerate(t.tolist()):
        w = _daily_weights(h, ti, 4)
        if math.isnan(w[-1]):
            continue
        one = (w[-1] - w[-2]) / 1.4 if not math.isnan(w[-2]) else 0.0
        earlier = w[:-1][~np.isnan(w[:-1])]
        three = (w[-1] - earlier.min()) / 2.3 if len(earlier) else 0.0
        out[i] = max(one, three)
    return out


def weight_macd(h: SimHistory, t: FloatArray) -> FloatArray:
    """Moving-average convergence-divergence of daily weight: the 3-day exponential
    average minus the 27-day one (kg), missing days carried forward."""
    out = np.zeros(len(t))
    for i, ti in enumerate(t.tolist()):
        w = _daily_weights(h, ti, 40)
        known = ~np.isnan(w)
        if known.sum() < 5:
            continue
        filled = np.copy(w)
        first = int(np.argmax(known))
        filled[:first] = w[first]
        for k in range(first + 1, len(filled)):
            if math.isnan(filled[k]):
                filled[k] = filled[k - 1]
        short, long_ = filled[0], filled[0]
        for v in filled:
            short += (v - short) * 2 / (3 + 1)
            long_ += (v - long_) * 2 / (27 + 1)
        out[i] = short - long_
    return out
