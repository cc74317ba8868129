"""python -m validation [--seed 11] [--patients 30] [--days 7] [--jobs 2] [--cache DIR]

One line per patient (mean plasma glucose, % time below 70, lows a day, readings
delivered, % of samples missing), a line per age group, then one JSON object of totals.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from firmware_sim.physiology.glucose import HYPO_MGDL
from validation.cohort import ExternalPatient, cohort


def _row(name: str, group: list[ExternalPatient]) -> str:
    days = sum(p.days for p in group)
    plasma = np.concatenate([p.plasma for p in group])
    return (
        f"{name:24s} {plasma.mean():6.1f} {100 * (plasma < HYPO_MGDL).mean():6.2f}"
        f" {sum(len(p.lows) for p in group) / days:6.2f}"
        f" {sum(len(p.readings) for p in group):8d}"
        f" {100 * np.mean([p.missing_fraction for p in group]):6.1f}"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m validation", description=__doc__)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--patients", type=int, default=30)
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=None)
    args = ap.parse_args(argv)
    started = time.monotonic()
    patients = cohort(args.seed, args.patients, args.days, args.jobs, args.cache)
    seconds = time.monotonic() - started
    print(
        f"{'patient':24s} {'meanBG':>6s} {'%<70':>6s} {'lows/d':>6s} {'readings':>8s} {'%miss':>6s}"
    )
    for p in patients:
        print(_row(p.patient_id, [p]))
    for group in ("adolescent", "adult", "child"):
        members = [p for p in patients if p.patient_id.startswith(f"uva-{group}-")]
        if members:
            print(_row(f"[{group}]", members))
    patient_days = sum(p.days for p in patients)
    lows = sum(len(p.lows) for p in patients)
    plasma = np.concatenate([p.plasma for p in patients])
    totals = {
        "patients": len(patients),
        "patient_days": round(patient_days, 3),
        "lows": lows,
        "lows_per_patient_day": round(lows / patient_days, 3),
        "readings": sum(len(p.readings) for p in patients),
        "missing_fraction": round(float(np.mean([p.missing_fraction for p in patients])), 4),
        "time_below_70": round(float((plasma < HYPO_MGDL).mean()), 4),
        "mean_bg": round(float(plasma.mean()), 1),
        "artefacts": sum(len(p.artefacts) for p in patients),
        "seconds": round(seconds, 1),
    }
    print(json.dumps(totals))


if __name__ == "__main__":
    main()
