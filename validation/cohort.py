"""An external validation cohort: simglucose's UVA/Padova patients as our gateway sees them.

Patient i (0-based) is simglucose's virtual patient ORDER[i % 30]; ORDER interleaves the
age groups (adolescent#001, adult#001, child#001, adolescent#002, ...) so a small cohort
still has all three. Its randomness is an independent stream keyed by (seed, i), split
into independent streams for therapy, days, sensor and delivery, so results do not
depend on ``jobs`` and changing one stage does not reshuffle the others.
"""

from __future__ import annotations

import gzip
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from validation import cgm, delivery, labels, scenario
from validation.uva_padova import (
    GROUPS,
    SIMGLUCOSE_VERSION,
    FloatArray,
    VirtualPatient,
    load_patients,
)

GENERATOR_VERSION = "1"  # bump when anything changes what a seed produces
START = 1_767_225_600.0  # 2026-01-01T00:00Z, as models/hypo.py START


@dataclass(frozen=True, eq=False)
class ExternalPatient:
    patient_id: str  # e.g. "uva-adult-001"
    source: str  # e.g. "simglucose 0.2.11 adult#001"
    start: float  # epoch seconds (UTC), first minute
    plasma: FloatArray  # true plasma glucose each minute from start, mg/dL
    interstitial: FloatArray  # subcutaneous glucose each minute, mg/dL
    readings: tuple[tuple[float, float, int, float], ...]  # (t, value, seq, received_at)
    lows: tuple[tuple[float, float], ...]  # (onset, end) epoch s, from plasma
    artefacts: tuple[tuple[float, float], ...]  # compression artefacts (start, end)
    meals: tuple[tuple[float, float], ...]  # (t, grams) including rescue carbs
    boluses: tuple[tuple[float, float], ...]  # (t, units)
    samples: int = 0  # samples the sensor took (the highest seq): delivered or lost

    @property
    def days(self) -> float:
        return len(self.plasma) / 1440.0

    @property
    def missing_fraction(self) -> float:
        """Share of the samples taken that never arrived (duplicates counted once)."""
        delivered = len({r[2] for r in self.readings})
        return 1.0 - delivered / self.samples if self.samples else float("nan")


def order() -> tuple[VirtualPatient, ...]:
    by_group = {g: [vp for vp in load_patients() if vp.group == g] for g in GROUPS}
    return tuple(vp for row in zip(*by_group.values(), strict=True) for vp in row)


def patient_id(i: int) -> str:
    vp = order()[i % len(order())]
    suffix = "" if i < len(order()) else f"-r{i // len(order()) + 1}"
    return f"uva-{vp.group}-{vp.number:03d}{suffix}"


def simulate_patient(seed: int, i: int, days: float, start: float = START) -> ExternalPatient:
    vp = order()[i % len(order())]
    r_therapy, r_days, r_sensor, r_loss, r_delivery = (
        np.random.default_rng(s) for s in np.random.SeedSequence([seed, i]).spawn(5)
    )
    minutes = round(days * 1440)
    offset_min = (start % 86400.0) / 60.0
    tp = scenario.therapy(vp, r_therapy)
    course = scenario.simulate(vp, tp, minutes, offset_min, r_days)
    samples = cgm.sample(course.interstitial, offset_min, r_sensor)
    t = start + samples.minute.astype(np.float64) * 60.0
    seq = np.arange(1, len(t) + 1, dtype=np.int64)
    keep = ~delivery.lost(t, r_loss)
    readings = delivery.deliver(t[keep], samples.value[keep], seq[keep], r_delivery)

    def at(m: float) -> float:
        return start + m * 60.0

    return ExternalPatient(
        patient_id=patient_id(i),
        source=f"simglucose {SIMGLUCOSE_VERSION} {vp.name}",
        start=start,
        plasma=course.plasma,
        interstitial=course.interstitial,
        readings=readings,
        lows=labels.lows(course.plasma, start),
        artefacts=tuple((at(a), at(b)) for a, b in samples.artefacts),
        meals=tuple((at(m), g) for m, g in course.meals),
        boluses=tuple((at(m), u) for m, u in course.boluses),
        samples=len(t),
    )


def _simulate_args(args: tuple[int, int, float, float]) -> ExternalPatient:
    return simulate_patient(*args)


def cohort(
    seed: int,
    patients: int = 30,
    days: float = 7.0,
    jobs: int = 2,
    cache_dir: Path | None = None,
    start: float = START,
) -> list[ExternalPatient]:
    """``patients`` simulated patients over ``days`` from ``start``; same seed, same cohort."""
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / _cache_name(seed, patients, days, start)
        if path.exists():
            return _load(path)
    work = [(seed, i, days, start) for i in range(patients)]
    if jobs <= 1 or patients <= 1:
        out = [_simulate_args(w) for w in work]
    else:
        # fork: workers inherit the imported simglucose instead of importing it again
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
        with ProcessPoolExecutor(max_workers=min(jobs, patients), mp_context=ctx) as pool:
            out = list(pool.map(_simulate_args, work, chunksize=1))
    if path is not None:
        _save(path, out)
    return out


def _cache_name(seed: int, patients: int, days: float, start: float) -> str:
    return (
        f"uva-g{GENERATOR_VERSION}-sg{SIMGLUCOSE_VERSION}-s{seed}-p{patients}"
        f"-d{days:g}-t{start:.0f}.json.gz"
    )


def _save(path: Path, cohort_: list[ExternalPatient]) -> None:
    """One gzip'd JSON file; floats round-trip exactly through json (repr)."""
    doc = [
        {
            "patient_id": p.patient_id,
            "source": p.source,
            "start": p.start,
            "plasma": p.plasma.tolist(),
            "interstitial": p.interstitial.tolist(),
            "readings": p.readings,
            "lows": p.lows,
            "artefacts": p.artefacts,
            "meals": p.meals,
            "boluses": p.boluses,
            "samples": p.samples,
        }
        for p in cohort_
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=6) as f:
        json.dump(doc, f)
    os.replace(tmp, path)


def _pairs(rows: list[list[float]]) -> tuple[tuple[float, float], ...]:
    return tuple((float(a), float(b)) for a, b in rows)


def _load(path: Path) -> list[ExternalPatient]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        doc = json.load(f)
    return [
        ExternalPatient(
            patient_id=d["patient_id"],
            source=d["source"],
            start=float(d["start"]),
            plasma=np.array(d["plasma"], dtype=np.float64),
            interstitial=np.array(d["interstitial"], dtype=np.float64),
            readings=tuple((float(t), float(v), int(s), float(r)) for t, v, s, r in d["readings"]),
            lows=_pairs(d["lows"]),
            artefacts=_pairs(d["artefacts"]),
            meals=_pairs(d["meals"]),
            boluses=_pairs(d["boluses"]),
            samples=int(d["samples"]),
        )
        for d in doc
    ]
