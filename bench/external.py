"""The twin's glucose alarms and forecasts on physiology the project did not write.

Source: the UVA/Padova type-1 model as packaged in simglucose (Dalla Man et al. 2007/2014;
``validation/``), its 30 virtual patients driven by meals, dosing errors and rescue carbs,
a CGM on the model's own subcutaneous glucose (plasma-to-interstitial lag) with
simglucose's noise model, a third of the samples missing (long gaps and dropouts),
compression artefacts at night, late, duplicate and backfilled deliveries. Nothing in
the gateway was tuned on it: parameters and thresholds are chosen on firmware_sim's
development seeds (models/hypo.py); this is a validation source only.

Each patient's readings are replayed one arrival at a time through the live path the
gateway runs (ingest writer: decode, dedupe, flags -> twin -> alert stage and engine),
on a real SQLite file, with the gateway clock at each message's arrival time. Scored
against the true *plasma* glucose:

    forecasts      at every arrival that moved the twin, its 30- and 60-min forecasts
                   (mean, 95% interval) against plasma then; beside a per-patient AR(10)
                   on the 5-min readings, fitted on the patient's first half, both scored
                   on the second half at the times where the AR has its 10 readings
    predicted_low  raised from 60 min before a low's onset to 15 min after: detected;
                   a raise with no low starting within the hour after: false
    all lows       any of urgent_low, low, predicted_low
    baselines      on the same deliveries (models/glucose_baselines.py): a bare
                   "reading < 70" and a 20-min least-squares line projected ahead by
                   the horizon tuned on firmware_sim's training cohorts to the
                   predictor's false-alarm budget (shipped/hypo_predictor.json)
    artefacts      compression artefacts during which (or up to 10 min after) a low
                   alarm was raised, outside any true low

Every proportion with a Wilson 95% interval, rates with exact Poisson intervals, leads
with a bootstrap interval.

    .venv/bin/python bench/external.py [--seed 11] [--patients 30] [--days 7] [--jobs 2]
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_twin.alert.catalog import AlarmSettings
from edge_twin.assess import hypo_predictor
from edge_twin.clock import ManualClock
from edge_twin.config import load_config
from edge_twin.domain import Signal
from edge_twin.estimate.view import estimate_at
from edge_twin.ingest.writer import RawMessage
from edge_twin.pipeline import Pipeline
from edge_twin.store import Store, devices, twin_state
from firmware_sim import wire
from firmware_sim.home import Home
from models.glucose_baselines import line_alarms, threshold_alarms
from models.hypo import LOOKAHEAD_S, MIX, START, Episode, Score, episodes, score
from models.stats import detection, rounded, wilson
from validation import SIMGLUCOSE_VERSION, ExternalPatient, cohort, delivery

ROOT = Path(__file__).resolve().parents[1]
AFTER_ONSET_S = 15 * 60.0
ARTEFACT_AFTER_S = 10 * 60.0
AR_ORDER = 10
STEP_S = 300.0
HORIZONS_MIN = (30, 60)
LOW_KINDS = ("urgent_low", "low", "predicted_low")


@dataclass
class PatientRun:
    patient_id: str
    days: float
    episodes: list[Episode]
    artefacts: list[tuple[float, float]]
    raises: dict[str, list[float]]  # alarm type -> gateway times it was raised
    threshold: list[float]
    line: list[float]
    # horizon -> (issued at, mean, sd, truth) for the twin; the AR's where it forecasts
    twin: dict[int, list[tuple[float, float, float, float]]] = field(default_factory=dict)
    ar: dict[int, list[tuple[float, float, float, float]]] = field(default_factory=dict)


def sim_cohort(seed: int, patients: int, days: float) -> list[ExternalPatient]:
    """The project's own simulator (CGM patients of the predictor's training mix) through
    the same sensor-loss and delivery faults as the external source: the internal figure
    to report beside the external one, and the development data to tune on."""
    home = Home(patients, START, days * 24, seed=seed, mix=MIX, kinds=("cgm",))
    out = []
    for i in range(patients):
        p = home.patient(i)
        rows = sorted(p.cgm)
        if not rows:
            continue
        rng = np.random.default_rng((seed, i, 17))
        t = np.array([r[0] for r in rows])
        keep = ~delivery.lost(t, rng)
        readings = delivery.deliver(
            t[keep],
            np.array([r[1] for r in rows])[keep],
            np.array([r[2] for r in rows], dtype=np.int64)[keep],
            rng,
        )
        out.append(
            ExternalPatient(
                patient_id=p.patient_id,
                source=f"firmware_sim seed {seed}",
                start=START,
                plasma=p.glucose_truth,
                interstitial=p.glucose_truth,
                readings=readings,
                lows=tuple((e.onset, e.end) for e in episodes(p)),
                artefacts=tuple((a.onset, a.end) for a in p.artefacts),
                meals=(),
                boluses=(),
                samples=len(rows),
            )
        )
    return out


def plasma_at(p: ExternalPatient, t: float) -> float | None:
    i = round((t - p.start) / 60.0)
    return float(p.plasma[i]) if 0 <= i < len(p.plasma) else None


def replay(job: tuple[ExternalPatient, float | None]) -> PatientRun:
    """The patient's deliveries through the gateway's ingest -> twin -> alert path, with
    the gateway's default alarm settings or another predicted-low level."""
    p, level = job
    device = f"cgm-{p.patient_id}"
    topic = wire.readings_topic(device)
    raises: dict[str, list[float]] = {k: [] for k in LOW_KINDS}
    twin: dict[int, list[tuple[float, float, float, float]]] = {h: [] for h in HORIZONS_MIN}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(env={})
        cfg = replace(
            cfg,
            store=replace(cfg.store, path=Path(tmp) / "gw.sqlite"),
            assess=replace(cfg.assess, model_dir=Path(tmp) / "models"),
        )
        store = Store(cfg.store.path, "NORMAL")
        devices.provision(store, device, p.patient_id, "cgm", p.start - 3600.0)
        clock = ManualClock(p.start)
        pipeline = Pipeline(store, cfg, clock)
        if level is not None:
            changes: dict[str, object] = {"predicted_low_probability": level}
            pipeline.engine.set_settings(p.patient_id, changes, "bench", p.start)
        last_alarm = 0
        newest = -math.inf
        for t, value, seq, received in p.readings:
            clock.set(max(clock.now(), received))
            payload = wire.senml_pack(device, [("glucose", "mg/dL", t, value, seq)])
            result = pipeline.writer.commit([RawMessage(topic, payload, received)])
            pipeline.after_commit(result)
            pipeline.on_idle()
            for alarm_id, kind in store.conn.execute(
                "SELECT id, alarm_type FROM alarms WHERE id > ? ORDER BY id", (last_alarm,)
            ).fetchall():
                last_alarm = int(alarm_id)
                if kind in raises:
                    raises[kind].append(clock.now())
            if result.readings_new and t > newest:
                newest = t
                record = next(
                    r for r in twin_state.load(store, p.patient_id) if r.signal is Signal.GLUCOSE
                )
                e = estimate_at(record, record.t)
                for f in e.forecasts:
                    h = round(f.horizon_s / 60.0)
                    truth = plasma_at(p, record.t + f.horizon_s)
                    if h in twin and truth is not None:
                        twin[h].append((record.t, f.mean, f.sd, truth))
        store.close()
    arrivals = [(t, v, r) for t, v, _, r in p.readings]
    return PatientRun(
        p.patient_id,
        len(p.plasma) / 1440.0,
        [Episode(onset, end) for onset, end in p.lows],
        list(p.artefacts),
        raises,
        threshold_alarms(arrivals),
        line_alarms(arrivals, line_ahead_min()),
        twin,
        ar_forecasts(p),
    )


def line_ahead_min() -> float:
    """The line baseline's projection, tuned in training (models/hypo.py)."""
    return float(hypo_predictor.shipped().card["baselines"]["line_ahead_min"])


def ar_forecasts(p: ExternalPatient) -> dict[int, list[tuple[float, float, float, float]]]:
    """Per-patient AR(10) on the 5-min readings (each reading's first delivery), least
    squares on the first half's unbroken runs; its 95% interval from the first half's
    residuals at each horizon. Forecasts on the second half, at each reading whose 10
    readings in a row had all arrived when it did (what the gateway knew then)."""
    first: dict[float, float] = {}
    arrived: dict[float, float] = {}  # each reading's first arrival
    for taken, value, _, received in p.readings:
        first.setdefault(taken, value)
        arrived[taken] = min(received, arrived.get(taken, received))
    t = np.array(sorted(first))
    v = np.array([first[x] for x in t])
    got = np.array([arrived[x] for x in t])
    half = p.start + len(p.plasma) * 30.0
    unbroken = np.concatenate(([False], np.abs(np.diff(t) - STEP_S) < 1))

    def run_ok(i: int, n: int) -> bool:
        """Readings i-n+1 .. i lie 5 min apart, none missing."""
        return i >= n - 1 and bool(unbroken[i - n + 2 : i + 1].all())

    def history_ok(i: int) -> bool:
        return run_ok(i, AR_ORDER)

    fit_at = [i for i in range(AR_ORDER, len(t)) if t[i] < half and run_ok(i, AR_ORDER + 1)]
    rows = [np.append(v[i - AR_ORDER : i][::-1], 1.0) for i in fit_at]
    targets = [v[i] for i in fit_at]
    out: dict[int, list[tuple[float, float, float, float]]] = {h: [] for h in HORIZONS_MIN}
    if len(rows) < 50:
        return out
    coef = np.linalg.lstsq(np.array(rows), np.array(targets), rcond=None)[0]

    def forecast(i: int, steps: int) -> float:
        history = list(v[i - AR_ORDER + 1 : i + 1][::-1])
        for _ in range(steps):
            history.insert(0, float(np.dot(coef[:-1], history[:AR_ORDER]) + coef[-1]))
        return float(history[0])

    sd: dict[int, float] = {}
    for h in HORIZONS_MIN:
        steps = h * 60 // int(STEP_S)
        errs = [
            forecast(i, steps) - first[t[i] + h * 60.0]
            for i in range(len(t))
            if t[i] + h * 60 < half and history_ok(i) and (t[i] + h * 60.0) in first
        ]
        sd[h] = float(np.std(errs)) if errs else math.nan
    for i in range(len(t)):
        if t[i] < half or not history_ok(i):
            continue
        if got[i - AR_ORDER + 1 : i + 1].max() > got[i]:
            continue  # part of its history had not arrived when reading i did
        for h in HORIZONS_MIN:
            truth = plasma_at(p, float(t[i]) + h * 60.0)
            if truth is not None:
                steps = h * 60 // int(STEP_S)
                out[h].append((float(t[i]), forecast(i, steps), sd[h], truth))
    return out


def forecast_figures(runs: Sequence[PatientRun], h: int) -> dict[str, float]:
    """RMSE, 95% coverage and mean width for the twin and the AR at the same times (the
    second half, where the AR forecasts), and the twin's RMSE at all its forecasts."""
    twin_all, twin_same, ar_same = [], [], []
    for r in runs:
        by_t = {x[0]: x for x in r.twin[h]}
        twin_all += r.twin[h]
        for a in r.ar[h]:
            # the twin's forecast issued at the same reading
            if a[0] in by_t:
                twin_same.append(by_t[a[0]])
                ar_same.append(a)

    def stats(rows: list[tuple[float, float, float, float]]) -> tuple[float, float, float]:
        if not rows:
            return (math.nan, math.nan, math.nan)
        m = np.array([x[1] for x in rows])
        sd = np.array([x[2] for x in rows])
        truth = np.array([x[3] for x in rows])
        rmse = float(np.sqrt(np.mean((m - truth) ** 2)))
        covered = float(np.mean(np.abs(m - truth) <= 1.96 * sd))
        return rmse, covered, float(np.mean(2 * 1.96 * sd))

    tw, ar, everywhere = stats(twin_same), stats(ar_same), stats(twin_all)
    return {
        f"rmse{h}_twin": round(tw[0], 2),
        f"rmse{h}_ar": round(ar[0], 2),
        f"rmse{h}_twin_all": round(everywhere[0], 2),
        f"coverage95_{h}": round(tw[1], 3),
        f"coverage95_{h}_ar": round(ar[1], 3),
        f"width95_{h}_twin": round(tw[2], 1),
        f"width95_{h}_ar": round(ar[2], 1),
        f"forecasts_{h}_compared": len(twin_same),
    }


def alarm_figures(name: str, sc: Score) -> dict[str, Any]:
    return detection(
        f"{name}_",
        sc.detected,
        sc.episodes,
        sc.false,
        sc.patient_days,
        sc.leads_min,
        "false_per_patient_day",
        "median_lead_min",
    )


def missed_by_gateway(runs: Sequence[PatientRun]) -> int:
    """Lows the bare threshold detected and none of the gateway's low alarms did."""
    missed = 0
    for r in runs:
        ours = [t for k in LOW_KINDS for t in r.raises[k]]
        for e in r.episodes:
            window = (e.onset - LOOKAHEAD_S, e.onset + AFTER_ONSET_S)
            caught = any(window[0] <= t <= window[1] for t in r.threshold)
            missed += caught and not any(window[0] <= t <= window[1] for t in ours)
    return missed


def artefacts_alarmed(runs: Sequence[PatientRun]) -> tuple[int, int]:
    """(artefacts that drew a low alarm outside any true low, artefacts)."""
    hit = total = 0
    for r in runs:
        alarms = sorted(t for k in LOW_KINDS for t in r.raises[k])
        for start, end in r.artefacts:
            total += 1
            during = [a for a in alarms if start <= a <= end + ARTEFACT_AFTER_S]
            real = [a for a in during if any(e.onset - 3600 <= a <= e.end for e in r.episodes)]
            hit += bool(set(during) - set(real))
    return hit, total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=11, help="fresh: tuned on nowhere")
    parser.add_argument("--patients", type=int, default=30, help="of simglucose's 30")
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--cache", type=Path, default=ROOT / "var" / "cache" / "external", help="cohort cache"
    )
    parser.add_argument(
        "--source",
        choices=("uva", "sim"),
        default="uva",
        help="uva: the external UVA/Padova cohort; sim: firmware_sim's, same faults (development)",
    )
    parser.add_argument(
        "--predicted-low-probability",
        type=float,
        default=None,
        help="the alarm setting to evaluate (default: the gateway's default)",
    )
    args = parser.parse_args()
    started = time.monotonic()
    if args.source == "uva":
        patients = cohort(args.seed, args.patients, args.days, args.jobs, args.cache)
        source = f"simglucose {SIMGLUCOSE_VERSION} (UVA/Padova)"
    else:
        patients = sim_cohort(args.seed, args.patients, args.days)
        source = "firmware_sim"
    print(f"cohort ready in {time.monotonic() - started:.0f} s", file=sys.stderr)
    runs: list[PatientRun] = []
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        jobs = [(p, args.predicted_low_probability) for p in patients]
        for i, run in enumerate(pool.imap(replay, jobs), start=1):
            runs.append(run)
            print(f"replayed {i}/{len(patients)}", file=sys.stderr)

    def scored(pick: Any) -> Score:
        return score([(pick(r), r.episodes, r.days) for r in runs], AFTER_ONSET_S)

    predicted = scored(lambda r: r.raises["predicted_low"])
    low_alone = scored(lambda r: sorted(r.raises["low"] + r.raises["urgent_low"]))
    all_lows = scored(lambda r: sorted(t for k in LOW_KINDS for t in r.raises[k]))
    thr = scored(lambda r: r.threshold)
    line = scored(lambda r: r.line)
    hit, total = artefacts_alarmed(runs)
    print(f"{'':<16} {'sens':>6} {'false/pt-day':>13} {'lead min':>9}", file=sys.stderr)
    for name, sc in (
        ("predicted_low", predicted),
        ("low, urgent low", low_alone),
        ("all low alarms", all_lows),
        ("threshold", thr),
        ("line", line),
    ):
        print(
            f"{name:<16} {sc.sensitivity:6.2f} {sc.false_per_patient_day:13.2f}"
            f" {sc.median_lead_min:9.1f}",
            file=sys.stderr,
        )
    figures: dict[str, Any] = {}
    for h in HORIZONS_MIN:
        figures |= forecast_figures(runs, h)
    print(
        json.dumps(
            {
                "rmse30_twin": figures["rmse30_twin"],
                "rmse30_ar": figures["rmse30_ar"],
                "coverage95": figures["coverage95_30"],
                "width95_twin": figures["width95_30_twin"],
                "width95_ar": figures["width95_30_ar"],
                **figures,
                **alarm_figures("predicted_low", predicted),
                **alarm_figures("low", low_alone),
                **alarm_figures("all_lows", all_lows),
                "lows_threshold_caught_gateway_missed": missed_by_gateway(runs),
                **alarm_figures("threshold", thr),
                **alarm_figures("line", line),
                "line_ahead_min": line_ahead_min(),
                "predicted_low_probability": AlarmSettings().predicted_low_probability
                if args.predicted_low_probability is None
                else args.predicted_low_probability,
                "artefacts_alarmed": round(hit / total, 3) if total else math.nan,
                "artefacts_alarmed_ci95": rounded(wilson(hit, total)),
                "artefacts": total,
                "lows": predicted.episodes,
                "patient_days": round(predicted.patient_days, 1),
                "source": source,
                "patients": len(patients),
                "days": args.days,
                "seed": args.seed,
                "seconds": round(time.monotonic() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
