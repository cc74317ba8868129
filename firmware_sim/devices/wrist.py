"""Wrist wearable firmware: heart rate and steps every minute; SpO2, respiratory rate and
skin temperature every 5 minutes; uploaded as one SenML pack every 5 minutes.

Imperfections:
- not worn at all on some days (``profile.wear``); off the wrist for a shower each morning
  and on the charger 60-90 min each evening: no measurements then;
- heart rate: N(0, 2) /min error, and motion artefacts while walking (15% of moving
  minutes read 15-40 /min high);
- SpO2: N(0, 1.2) % error, and 20% of readings while moving read 3-8 % low;
- respiratory rate N(0, 0.8) /min; skin temperature N(0, 0.15) Cel; steps within 10%.
"""

from __future__ import annotations

import numpy as np

from firmware_sim.devices import Record, Upload
from firmware_sim.physiology.body import Truth
from firmware_sim.physiology.processes import hour_of_day
from firmware_sim.physiology.profile import Profile

UPLOAD_EVERY_MIN = 5
SLOW_EVERY_MIN = 5


def worn_mask(profile: Profile, start: float, minutes: int, rng: np.random.Generator) -> np.ndarray:
    worn = np.zeros(minutes, dtype=bool)
    hours = hour_of_day(start, minutes)
    day_starts = np.flatnonzero(np.diff(hours, prepend=hours[0] + 1) < 0)
    if day_starts.size == 0 or day_starts[0] != 0:
        day_starts = np.concatenate(([0], day_starts))
    for i, lo in enumerate(day_starts):
        hi = day_starts[i + 1] if i + 1 < len(day_starts) else minutes
        if rng.random() < profile.wear:
            worn[lo:hi] = True
    for lo in day_starts:
        shower = int(lo + (profile.wake_h + rng.uniform(0.2, 1.5)) * 60)
        charge = int(lo + rng.uniform(18.0, 21.5) * 60)
        worn[max(0, shower) : max(0, shower + int(rng.uniform(10, 25)))] = False
        worn[max(0, charge) : max(0, charge + int(rng.uniform(60, 90)))] = False
    return worn


def simulate(
    truth: Truth, profile: Profile, rng: np.random.Generator
) -> tuple[list[Upload], np.ndarray]:
    """Uploads, and the worn mask (minute by minute) for the battery/status model."""
    n, start = truth.minutes, truth.start
    worn = worn_mask(profile, start, n, rng)
    s = truth.signals
    moving = s["steps"] > 40
    hr = s["heart_rate"] + rng.normal(0, 2, n)
    hr += (moving & (rng.random(n) < 0.15)) * rng.uniform(15, 40, n)
    steps = s["steps"] * rng.uniform(0.9, 1.1, n)
    spo2 = (
        s["spo2"] + rng.normal(0, 1.2, n) - (moving & (rng.random(n) < 0.2)) * rng.uniform(3, 8, n)
    )
    rr = s["resp_rate"] + rng.normal(0, 0.8, n)
    temp = s["skin_temp"] + rng.normal(0, 0.15, n)

    # Device resolution, rounded once for all minutes (plain floats for the encoder).
    hr_l = np.round(hr).tolist()
    steps_l = np.round(steps).tolist()
    spo2_l = np.minimum(100.0, np.round(spo2)).tolist()
    rr_l = np.round(rr, 1).tolist()
    temp_l = np.round(temp, 2).tolist()
    uploads: list[Upload] = []
    seq = 0
    records: list[Record] = []
    for minute in range(n):
        if worn[minute]:
            t = start + minute * 60.0
            seq += 1
            records.append(("heart_rate", "1/min", t, hr_l[minute], seq))
            records.append(("steps", "count", t, steps_l[minute], seq))
            if minute % SLOW_EVERY_MIN == 0:
                records.append(("spo2", "%", t, spo2_l[minute], seq))
                records.append(("resp_rate", "1/min", t, rr_l[minute], seq))
                records.append(("skin_temp", "Cel", t, temp_l[minute], seq))
        if minute % UPLOAD_EVERY_MIN == UPLOAD_EVERY_MIN - 1 and records:
            uploads.append(Upload(start + minute * 60.0 + 30.0, records))
            records = []
    if records:
        uploads.append(Upload(start + n * 60.0, records))
    return uploads, worn
