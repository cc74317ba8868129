"""The shipped decompensation model against the weight rules, on a held-out cohort.

The cohort is simulated with a seed and a patient mix never used in training (training:
seeds 1001/2002/3003, hypertension 60%; here: seed 9009, hypertension 30%), 40% of the
data missing in long gaps, every patient evaluated once a day (models/evaluate.py says
how alerts are judged). What is measured is the alarm the gateway raises: each day's
risk (onnxruntime, at the threshold the card fixed on validation) with the runtime's
confidence, through the gateway's own alarm condition (confidence gate, hysteresis,
``deployed_starts``). Beside it the model's score alone, and the two weight rules
clinicians use (rule of thumb: 1.4 kg in a day or 2.3 kg in 3 days; weight MACD), each
at the threshold that gives the deployed alarm's false-alert rate on this same cohort
(which favours the rules): AUROC, sensitivity, false alerts per patient-year, median lead
time, each with its 95% interval; and the model's calibration error.

Latency: one patient's evaluation as the gateway does it (its stored twin read from
SQLite, features, the batched inference with contributions), median and p99, and the
inference alone.

    .venv/bin/python bench/risk.py [--patients 120] [--days 180] [--jobs 2] [--model DIR]
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_twin.alert import conditions
from edge_twin.assess.history import StoredHistory
from edge_twin.assess.risk_model import RiskModel, load_model, shipped_dir
from edge_twin.domain import DecompensationRisk, ModelProvenance, Reading, Signal
from edge_twin.estimate.tracker import TwinEstimator
from edge_twin.store import Store, devices, readings
from firmware_sim.home import Home
from firmware_sim.physiology.profile import CohortMix
from models.cohort import KINDS, START, CohortSpec
from models.dataset import PatientRows, cohort_rows
from models.evaluate import (
    AlertMetrics,
    alert_metrics,
    auroc,
    expected_calibration_error,
    false_alert_causes,
    metrics_of_starts,
    threshold_for,
)
from models.stats import detection

HELD_OUT_MIX = CohortMix(heart_failure=1.0, diabetes=0.0, hypertension=0.3)


def deployed_starts(model: RiskModel, p: PatientRows, risk: np.ndarray) -> list[float]:
    """When the gateway would raise ``decompensation_risk`` for this patient: each day's
    risk with the runtime's confidence, through the alarm condition the gateway runs
    (edge_twin.alert.conditions.decompensation: the confidence gate and its hysteresis);
    a raise is a rising edge (the alarm type has no persistence delay and no latch)."""
    starts: list[float] = []
    present = False
    provenance = ModelProvenance(model.card.name, model.card.version, model.card.sha256, 0, 0, ())
    for t, row, prob in zip(p.t.tolist(), p.X, risk.tolist(), strict=True):
        confidence, reasons = model.confidence(row)
        assessed = DecompensationRisk(
            p.patient_id,
            t,
            model.card.horizon_days,
            prob,
            model.card.threshold,
            confidence,
            reasons,
            (),
            (),
            provenance,
        )
        was = frozenset({"decompensation_risk"} if present else ())
        present = conditions.decompensation(assessed, was.__contains__, True)[0].present
        if present and not was:
            starts.append(t)
    return starts


def with_intervals(prefix: str, m: AlertMetrics) -> dict[str, Any]:
    """Sensitivity, false alerts per patient-year and median lead with 95% intervals."""
    return detection(
        prefix,
        m.detected,
        m.events,
        m.false_alerts,
        m.judged_years,
        m.leads_days,
        "false_alerts_per_patient_year",
        "median_lead_days",
    )


def latency(model_dir: Path, repeats: int) -> dict[str, float]:
    """Evaluate one simulated patient from a real store, ``repeats`` times."""
    model = load_model(model_dir)
    home = Home(1, START, 35 * 24, seed=9010, mix=HELD_OUT_MIX, kinds=KINDS)
    patient = home.patient(0)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.sqlite", "NORMAL")
        rows = []
        for d in patient.devices:
            devices.provision(store, d.device_id, d.patient_id, d.device_type, START)
            for u in patient.uploads[d.device_id]:
                for name, _, t, v, _ in u.records:
                    rows.append(Reading(d.patient_id, d.device_id, Signal(name), t, v, u.t))
        rows.sort(key=lambda r: r.t)
        with store.transaction() as conn:
            readings.insert(conn, rows)
        TwinEstimator(store).catch_up()
        t_eval = rows[-1].t
        full, infer = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            history = StoredHistory(store, patient.patient_id, t_eval)
            risk = model.assess(history, patient.patient_id, t_eval)
            full.append(time.perf_counter() - t0)
            row = np.array([v if v is not None else math.nan for _, v in risk.features])
            t0 = time.perf_counter()
            model.assess_row(row, history, patient.patient_id, t_eval)
            infer.append(time.perf_counter() - t0)
        store.close()
    us = 1e6
    return {
        "p50_eval_us": round(float(np.median(full)) * us, 1),
        "p99_eval_us": round(float(np.quantile(full, 0.99)) * us, 1),
        "p50_infer_us": round(float(np.median(infer)) * us, 1),
        "p99_infer_us": round(float(np.quantile(infer, 0.99)) * us, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=120)
    parser.add_argument("--days", type=float, default=180.0)
    parser.add_argument("--seed", type=int, default=9009, help="held out: used nowhere else")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--model", type=Path, default=shipped_dir())
    parser.add_argument("--repeats", type=int, default=300, help="latency repetitions")
    args = parser.parse_args()
    model = load_model(args.model)
    spec = CohortSpec(args.seed, args.patients, args.days, HELD_OUT_MIX, (0.4,))
    patients: list[PatientRows] = []
    for i, rows in enumerate(cohort_rows(spec, random_hour=False, jobs=args.jobs)):
        patients.append(rows)
        print(f"patient {i + 1}/{args.patients}", file=sys.stderr)
    predicted = [model.predict(p.X) for p in patients]
    risk = [p.scores(pr) for p, pr in zip(patients, predicted, strict=True)]
    rule = [p.scores(p.rule) for p in patients]
    macd = [p.scores(p.macd) for p in patients]
    p_all = np.concatenate([s.score for s in risk])
    y_all = np.concatenate([s.label for s in risk])
    threshold = model.card.threshold
    # What the gateway raises (confidence gate, hysteresis) is what is measured; the
    # model's score at its threshold (alerts merged over CLEAR_DAYS) is shown beside it.
    raised = [deployed_starts(model, p, pr) for p, pr in zip(patients, predicted, strict=True)]
    deployed = metrics_of_starts(risk, raised, threshold)
    causes, chance = false_alert_causes(risk, raised, [p.confounders for p in patients])
    m = alert_metrics(risk, threshold)
    budget = deployed.false_alerts_per_patient_year
    r = threshold_for(rule, budget)
    c = threshold_for(macd, budget)
    rule_own = alert_metrics(rule, 1.0)
    print(
        f"{'':<22} {'AUROC':>6} {'sens':>6} {'FA/pt-yr':>9} {'lead d':>7} {'threshold':>10}",
        file=sys.stderr,
    )
    for name, scores, metrics in (
        ("deployed alarm", risk, deployed),
        ("model score", risk, m),
        ("rule of thumb", rule, r),
        ("weight MACD", macd, c),
        ("rule of thumb (own)", rule, rule_own),
    ):
        auc = auroc(np.concatenate([s.score for s in scores]), y_all)
        print(
            f"{name:<22} {auc:6.3f} {metrics.sensitivity:6.2f}"
            f" {metrics.false_alerts_per_patient_year:9.2f} {metrics.median_lead_days:7.1f}"
            f" {metrics.threshold:10.3f}",
            file=sys.stderr,
        )
    lat = latency(args.model, args.repeats)
    years = sum(len(p.t) for p in patients) / 365.25
    print(
        json.dumps(
            {
                "auroc": round(auroc(p_all, y_all), 3),
                **with_intervals("", deployed),
                "events": deployed.events,
                "detected": deployed.detected,
                "false_alerts_by_cause": causes,
                "false_alerts_by_cause_per_patient_year": {
                    k: round(v / deployed.judged_years, 3) for k, v in causes.items()
                },
                # the share of judged days each cause's window covers: chance attribution
                "false_alerts_by_cause_chance_share": chance,
                **with_intervals("score_", m),
                **with_intervals("rule_", r),
                **with_intervals("macd_", c),
                "rule_auroc": round(auroc(np.concatenate([s.score for s in rule]), y_all), 3),
                "macd_auroc": round(auroc(np.concatenate([s.score for s in macd]), y_all), 3),
                "rule_own_threshold_sensitivity": round(rule_own.sensitivity, 3),
                "rule_own_threshold_false_per_year": round(
                    rule_own.false_alerts_per_patient_year, 3
                ),
                "ece": round(expected_calibration_error(p_all, y_all), 4),
                **lat,
                "model_version": model.card.version,
                "patients": args.patients,
                "patient_years": round(years, 1),
                "days": args.days,
                "seed": args.seed,
            }
        )
    )


if __name__ == "__main__":
    main()
