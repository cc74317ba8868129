"""Fast checks of the external validation cohort (2 patients x 1 day)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from firmware_sim.physiology.glucose import HYPO_MGDL, HYPO_MIN_MINUTES
from validation import ExternalPatient, UvaPadova, cohort, load_patients
from validation.cgm import noise
from validation.delivery import lost
from validation.simglucose_api import Action, T1DPatient

SEED = 3


@pytest.fixture(scope="module")
def patients() -> list[ExternalPatient]:
    return cohort(SEED, patients=2, days=1.0, jobs=1)


def _same(a: ExternalPatient, b: ExternalPatient) -> bool:
    return (
        a.patient_id == b.patient_id
        and a.source == b.source
        and a.start == b.start
        and np.array_equal(a.plasma, b.plasma)
        and np.array_equal(a.interstitial, b.interstitial)
        and a.readings == b.readings
        and a.lows == b.lows
        and a.artefacts == b.artefacts
        and a.meals == b.meals
        and a.boluses == b.boluses
    )


def test_all_30_patients_load() -> None:
    vps = load_patients()
    assert len(vps) == 30
    assert {vp.group for vp in vps} == {"adolescent", "adult", "child"}
    assert all(vp.cr > 0 and vp.cf > 0 and vp.basal_u_per_min > 0 for vp in vps)


def test_same_seed_same_cohort_whatever_the_jobs(patients: list[ExternalPatient]) -> None:
    again = cohort(SEED, patients=2, days=1.0, jobs=2)
    assert all(_same(a, b) for a, b in zip(patients, again, strict=True))
    other = cohort(SEED + 1, patients=1, days=1.0, jobs=1)
    assert not np.array_equal(other[0].plasma, patients[0].plasma)


def test_cache_round_trips(tmp_path: Path, patients: list[ExternalPatient]) -> None:
    first = cohort(SEED, patients=2, days=1.0, jobs=1, cache_dir=tmp_path)
    files = list(tmp_path.iterdir())
    assert len(files) == 1
    assert files[0].name.endswith(".json.gz")
    loaded = cohort(SEED, patients=2, days=1.0, jobs=1, cache_dir=tmp_path)
    assert all(_same(a, b) for a, b in zip(first, loaded, strict=True))
    assert all(_same(a, b) for a, b in zip(patients, loaded, strict=True))


@pytest.mark.parametrize("name", ["adolescent#007", "adult#001", "child#008"])
def test_matches_simglucose_own_patient(name: str) -> None:
    """Our stepping (bookkeeping + RK4) against T1DPatient.step (dopri5) itself."""
    theirs = T1DPatient.withName(name)
    vp = next(v for v in load_patients() if v.name == name)
    ours = UvaPadova(vp)
    worst = 0.0
    for m in range(240):
        cho = 60.0 if m == 10 else 0.0
        insulin = vp.basal_u_per_min + (60.0 / vp.cr if m == 10 else 0.0)
        if cho:
            ours.eat(cho)
        theirs.step(Action(CHO=cho, insulin=insulin))
        ours.step(insulin)
        worst = max(worst, abs(ours.bg - theirs.state[3] / vp.vg))
        worst = max(worst, abs(ours.gsub - theirs.observation.Gsub))
    assert worst < 0.5
    assert ours.t == 240


def test_ode_stays_finite_and_physiological(patients: list[ExternalPatient]) -> None:
    for p in patients:
        assert len(p.plasma) == len(p.interstitial) == 1440
        assert np.isfinite(p.plasma).all()
        assert np.isfinite(p.interstitial).all()
        assert p.plasma.min() > 20
        assert p.plasma.max() < 600


def test_lows_are_the_plasma_stretches_below_70(patients: list[ExternalPatient]) -> None:
    for p in patients:
        expected = []
        run = 0
        for m, below in enumerate(np.append(p.plasma < HYPO_MGDL, False)):
            if below:
                run += 1
                continue
            if run >= HYPO_MIN_MINUTES:
                expected.append((p.start + (m - run) * 60.0, p.start + m * 60.0))
            run = 0
        assert list(p.lows) == expected
    # a synthetic series, so the rule is exercised even if this seed has no low
    from validation.labels import lows

    g = np.full(200, 100.0)
    g[50:64] = 60.0  # 14 min: not a low
    g[100:115] = 65.0  # 15 min: a low
    assert lows(g, 0.0) == ((6000.0, 6900.0),)


def test_interstitial_lags_plasma_on_a_meal_rise(patients: list[ExternalPatient]) -> None:
    p = patients[0]
    meal_t, _ = max(p.meals, key=lambda m: m[1])
    m0 = int((meal_t - p.start) // 60)
    window = slice(m0, min(m0 + 150, len(p.plasma)))
    dp = np.diff(p.plasma[window])
    di = np.diff(p.interstitial[window])
    lags = range(31)
    xc = [float(np.dot(dp[: len(dp) - k], di[k:])) for k in lags]
    best = int(np.argmax(xc))
    assert 5 <= best <= 15, best


def test_readings_arrive_late_twice_and_out_of_order(patients: list[ExternalPatient]) -> None:
    dup = out_of_order = 0
    for p in patients:
        received = [r[3] for r in p.readings]
        assert received == sorted(received)
        assert all(r[3] >= r[0] + 5.0 for r in p.readings)
        assert all(40.0 <= r[1] <= 400.0 and round(r[1], 1) == r[1] for r in p.readings)
        seqs = [r[2] for r in p.readings]
        dup += len(seqs) - len(set(seqs))
        out_of_order += sum(b[0] < a[0] for a, b in zip(p.readings, p.readings[1:], strict=False))
        # seq counts every 5-min sample from the start, sent or lost
        assert all(r[2] == (r[0] - p.start) / 300.0 + 1 for r in p.readings)
    assert dup > 0
    assert out_of_order > 0


def test_missing_fraction_near_a_third(patients: list[ExternalPatient]) -> None:
    rng = np.random.default_rng(1)
    t = np.arange(0, 30 * 86400.0, 300.0)
    assert 0.28 < lost(t, rng).mean() < 0.36
    for p in patients:
        assert 0.25 < p.missing_fraction < 0.65  # one day: a single 6-h gap is 25 %


def test_sensor_noise_is_simglucose_and_seeded() -> None:
    a, b = noise(300, 7), noise(300, 7)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, noise(300, 8))
    assert 5.0 < float(np.std(a)) < 30.0
