"""Spot-check devices: the BP cuff (morning and evening) and the scale (morning).

BP cuff: each scheduled reading is taken with probability ``profile.adherence``; error =
a per-device bias N(0, 3) / N(0, 2) mmHg plus N(0, 6) / N(0, 4) per reading, within
ISO 81060-2 (mean difference <= 5, SD <= 8 mmHg); it also reports the pulse.
Scale: each morning with probability ``profile.adherence``; 30% of weighings are in
clothes (+0.3-1.5 kg); N(0, 0.1) kg error; 0.1 kg resolution.
"""

from __future__ import annotations

import numpy as np

from firmware_sim.devices import Upload
from firmware_sim.physiology.body import Truth
from firmware_sim.physiology.confounders import scale_offset
from firmware_sim.physiology.profile import Profile


def _days(truth: Truth) -> range:
    first = int(truth.start // 86400)
    last = int((truth.start + truth.minutes * 60) // 86400)
    return range(first, last + 1)


def _minute(truth: Truth, t: float) -> int | None:
    m = int((t - truth.start) // 60)
    return m if 0 <= m < truth.minutes else None


def bp_cuff(truth: Truth, profile: Profile, rng: np.random.Generator) -> list[Upload]:
    bias_sys, bias_dia = rng.normal(0, 3), rng.normal(0, 2)
    uploads: list[Upload] = []
    seq = 0
    s = truth.signals
    for day in _days(truth):
        for hour in (profile.wake_h + rng.uniform(0.2, 1.5), rng.uniform(20.0, 22.5)):
            t = day * 86400.0 + hour * 3600.0
            m = _minute(truth, t)
            if m is None or rng.random() > profile.adherence:
                continue
            seq += 1
            sys = round(float(s["systolic"][m] + bias_sys + rng.normal(0, 6)))
            dia = round(float(s["diastolic"][m] + bias_dia + rng.normal(0, 4)))
            pulse = round(float(s["heart_rate"][m] + rng.normal(0, 2)))
            uploads.append(
                Upload(
                    t + 45.0,  # a cuff reading takes about 45 s
                    [
                        ("systolic", "mmHg", t, float(sys), seq),
                        ("diastolic", "mmHg", t, float(dia), seq),
                        ("heart_rate", "1/min", t, float(pulse), seq),
                    ],
                )
            )
    return uploads


def scale(truth: Truth, profile: Profile, rng: np.random.Generator) -> list[Upload]:
    uploads: list[Upload] = []
    seq = 0
    for day in _days(truth):
        t = day * 86400.0 + (profile.wake_h + rng.uniform(0.1, 1.0)) * 3600.0
        m = _minute(truth, t)
        if m is None or rng.random() > profile.adherence:
            continue
        seq += 1
        clothes = rng.uniform(0.3, 1.5) if rng.random() < 0.3 else 0.0
        offset = scale_offset(truth.confounders, t)  # a new scale, another floor
        value = round(float(truth.signals["weight"][m] + clothes + offset + rng.normal(0, 0.1)), 1)
        uploads.append(Upload(t + 5.0, [("weight", "kg", t, value, seq)]))
    return uploads
