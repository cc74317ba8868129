"""The simulator's physiology and devices do what their docs say, on a seeded cohort."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from firmware_sim.home import Home, SimPatient
from firmware_sim.physiology.profile import CohortMix
from tests.conftest import T0

HF_ONLY = CohortMix(heart_failure=1.0, diabetes=0.0)
T1_ONLY = CohortMix(heart_failure=0.0, diabetes=1.0, type1_given_diabetes=1.0)


@pytest.fixture(scope="module")
def hf_cohort() -> list[SimPatient]:
    home = Home(12, T0, 24 * 120, seed=31, mix=HF_ONLY, kinds=("scale", "wrist"))
    return [home.patient(i) for i in range(12)]


def test_same_seed_same_patients_and_faults_do_not_change_physiology() -> None:
    a = Home(2, T0, 24, seed=4).patient(1)
    b = Home(2, T0, 24, seed=4, kinds=("wrist",)).patient(1)
    for signal in ("heart_rate", "weight", "glucose"):
        assert np.array_equal(a.truth.signals[signal], b.truth.signals[signal], equal_nan=True)


def test_heterogeneous_patients() -> None:
    home = Home(40, T0, 24, seed=9)
    conditions = {(p.heart_failure, p.diabetes, p.hypertension) for p in home.profiles}
    assert len(conditions) >= 6
    assert np.std([p.weight_kg for p in home.profiles]) > 10
    assert {d.device_type for d in home.devices} == {"cgm", "wrist", "bp_cuff", "scale"}
    diabetic = {f"pt-{i + 1:03d}" for i, p in enumerate(home.profiles) if p.diabetes}
    assert {d.patient_id for d in home.devices if d.device_type == "cgm"} == diabetic


def test_decompensations_build_over_days_and_some_bring_no_weight_gain(
    hf_cohort: list[SimPatient],
) -> None:
    episodes = [d for p in hf_cohort for d in p.truth.decompensations]
    assert len(episodes) >= 5
    builds = [(d.peak - d.onset) / 86400 for d in episodes]
    assert min(builds) >= 7
    assert max(builds) <= 30
    assert any(d.expression.weight_kg == 0 for d in episodes)
    assert any(d.expression.weight_kg > 1 for d in episodes)
    # Respiratory rate at the event is above its level a month before, on average.
    rises = []
    for p in hf_cohort:
        rr = p.truth.signals["resp_rate"]
        for d in p.truth.decompensations:
            peak = int((d.peak - T0) // 60)
            before = peak - 30 * 1440
            if before >= 0:
                rises.append(rr[peak - 1440 : peak].mean() - rr[before - 1440 : before].mean())
    assert np.mean(rises) > 1.0


def test_wrist_gaps_and_artefacts(hf_cohort: list[SimPatient]) -> None:
    p = hf_cohort[0]
    worn = p.wrist_worn
    assert worn is not None
    assert 0.5 < worn.mean() < 0.97  # off for showers, charging and whole days
    hr = [r for u in p.uploads["wr-001"] for r in u.records if r[0] == "heart_rate"]
    truth = p.truth.signals["heart_rate"]
    errors = np.array([v - truth[int((t - T0) // 60)] for _, _, t, v, _ in hr])
    assert abs(np.median(errors)) < 1.0
    assert (errors > 12).mean() > 0.001  # motion artefacts exist


def test_type1_hypoglycaemia_labels_match_the_truth() -> None:
    home = Home(4, T0, 24 * 14, seed=5, mix=T1_ONLY, kinds=("cgm",))
    for p in home.patients:
        g = p.truth.signals["glucose"]
        for e in [e for e in p.episodes if e.kind == "hypoglycaemia"]:
            nadir = int((e.peak - T0) // 60)
            assert g[nadir] < 70
            assert g[int((e.onset - T0) // 60)] < 70
    assert sum(e.kind == "hypoglycaemia" for p in home.patients for e in p.episodes) >= 4


def test_compression_lows_drop_the_sensor_not_the_body() -> None:
    home = Home(3, T0, 24 * 20, seed=6, mix=T1_ONLY, kinds=("cgm",))
    drops = []
    for p in home.patients:
        readings = {t: v for t, v, _ in p.cgm}
        g = p.truth.signals["glucose"]
        for e in [e for e in p.episodes if e.kind == "cgm_compression_low"]:
            inside = [
                readings[t] - g[int((t - T0) // 60)] for t in readings if e.onset <= t < e.peak
            ]
            if inside:
                drops.append(min(inside))
    assert len(drops) >= 5
    assert np.median(drops) < -15


def test_cgm_sessions_have_warmup_gaps() -> None:
    p = Home(1, T0, 24 * 30, seed=2, mix=T1_ONLY, kinds=("cgm",)).patient(0)
    times = np.array([t for t, _, _ in p.cgm])
    gaps = np.diff(times) / 60
    assert (gaps >= 120).sum() >= 2  # a new sensor every 10 days, 2 h warm-up each
    assert np.median(gaps) == 5


def test_spot_devices_follow_adherence() -> None:
    """Scheduled readings taken ~ Binomial(n, adherence): z-scores across patients."""
    home = Home(40, T0, 24 * 30, seed=12, kinds=("bp_cuff", "scale"))
    z = []
    for i in range(40):
        p, a = home.patient(i), home.profiles[i].adherence
        for device, scheduled in ((f"sc-{i + 1:03d}", 30), (f"bp-{i + 1:03d}", 60)):
            taken = len(p.uploads[device])
            z.append((taken - scheduled * a) / np.sqrt(scheduled * a * (1 - a)))
        cuff = p.uploads[f"bp-{i + 1:03d}"]
        assert all(
            {r[0] for r in u.records} == {"systolic", "diastolic", "heart_rate"} for u in cuff
        )
    assert abs(np.mean(z)) < 0.5
    assert 0.6 < np.std(z) < 1.4


def test_plot_command_writes_a_png(tmp_path: Path) -> None:
    out = tmp_path / "p.png"
    subprocess.run(
        [
            str(Path(sys.executable).parent / "firmware-sim"),
            "plot",
            "--out",
            str(out),
            "--days",
            "3",
        ],
        check=True,
        capture_output=True,
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 20_000


def test_confounders_are_labelled_and_move_what_they_say(hf_cohort: list[SimPatient]) -> None:
    """Infections raise skin temperature (a fever) without an admission; each admission
    is followed by a post-discharge recovery."""
    kinds = {c.kind for p in hf_cohort for c in p.truth.confounders}
    assert {"infection", "holiday", "post_discharge", "subclinical_congestion"} <= kinds
    fevers = []
    for p in hf_cohort:
        temp = p.truth.signals["skin_temp"]
        for c in p.truth.confounders:
            if (
                c.kind == "infection"
                and c.start > T0 + 3 * 86400
                and c.end < p.truth.start + (p.truth.minutes - 1) * 60
            ):
                inside = int((c.start + (c.end - c.start) * 0.2 - T0) // 60)
                before = int((c.start - 2 * 86400 - T0) // 60)
                fevers.append(
                    temp[inside : inside + 1440].mean() - temp[before : before + 1440].mean()
                )
        admissions = len(p.truth.decompensations)
        assert sum(c.kind == "post_discharge" for c in p.truth.confounders) == admissions
    assert fevers
    assert np.median(fevers) > 0.4


def test_a_scale_change_moves_every_later_weighing_not_the_body() -> None:
    home = Home(20, T0, 24 * 365, seed=37, mix=HF_ONLY, kinds=("scale",))
    patients = [home.patient(i) for i in range(20)]
    changes = [(p, c) for p in patients for c in p.truth.confounders if c.kind == "scale_change"]
    checked = 0
    for p, c in changes:
        if sum(x.kind == "scale_change" for x in p.truth.confounders) > 1:
            continue
        scale = next(d for d in p.devices if d.device_type == "scale")
        before, after = [], []
        for u in p.uploads[scale.device_id]:
            _, _, t, value, _ = u.records[0]
            (after if t > c.start else before).append(value - p.truth.at("weight", t))
        if len(before) >= 10 and len(after) >= 10:
            # most weighings are in light clothes (+0), so the medians show the offset
            assert np.median(after) - np.median(before) == pytest.approx(c.scale_offset_kg, abs=0.3)
            checked += 1
    assert checked >= 1
