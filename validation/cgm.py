"""The CGM: UVA/Padova subcutaneous glucose every 5 min plus simglucose's sensor noise.

* The sensed signal is the model's subcutaneous glucose (state 13 / Vg, ``Gsub``), which
  is what simglucose's ``CGMSensor.measure`` reads: it carries the plasma-to-interstitial
  lag (first order, rate ``ksc``), so nothing else is added for the lag.
* The noise is simglucose's own ``CGMNoise`` (simglucose/sensor/noise_gen.py): an AR(1)
  process at 15 min mapped through a Johnson SU transform and cubic-interpolated to the
  sample time, after Breton & Kovatchev, "Analysis, modeling, and simulation of the
  accuracy of continuous glucose sensors", J Diabetes Sci Technol 2(5), 2008. We call it
  with the Dexcom row of ``params/sensor_params.csv`` but a 5-min sample time (Dexcom's
  row says 3 min; GuardianRT's row has the same noise parameters at 5 min), seeded from
  the patient's stream so runs are reproducible.
* Clipped to 40-400 mg/dL (our firmware's CgmSpec lo/hi in
  firmware_sim/devices/cgm.py), rounded to 0.1.
* Compression lows at night as our firmware simulates them (same file): ~0.25 a night
  between 01:00 and 06:00, a sine-shaped drop of 25-60 mg/dL over 10-30 min and back;
  the body is fine, so they are recorded as artefacts (start, end).
"""

from __future__ import annotations

import csv
import importlib.resources
from dataclasses import dataclass

import numpy as np

from validation.simglucose_api import CGMNoise
from validation.uva_padova import FloatArray

PERIOD_MIN = 5
LO, HI = 40.0, 400.0
SENSOR = "Dexcom"
COMPRESSION_PER_NIGHT = 0.25
COMPRESSION_WINDOW_H = (1.0, 6.0)
COMPRESSION_MIN = (10.0, 30.0)
COMPRESSION_DEPTH = (25.0, 60.0)


@dataclass(frozen=True)
class Samples:
    """Every sample the sensor took (before any loss), 5 min apart from the start."""

    minute: np.ndarray  # int minute index into the 1-minute series
    value: FloatArray  # mg/dL as the sensor would report it
    artefacts: tuple[tuple[int, int], ...]  # compression lows (start, end) minutes


def sensor_params(name: str = SENSOR) -> dict[str, float]:
    text = (importlib.resources.files("simglucose") / "params" / "sensor_params.csv").read_text()
    for row in csv.DictReader(text.splitlines()):
        if row["Name"] == name:
            params = {k: float(v) for k, v in row.items() if k != "Name"}
            params["sample_time"] = float(PERIOD_MIN)
            return params
    raise KeyError(name)


def noise(n: int, seed: int) -> FloatArray:
    """n samples of simglucose's CGM noise, one per PERIOD_MIN."""
    gen = CGMNoise(sensor_params(), seed=seed)
    return np.array([float(next(gen)) for _ in range(n)])


def sample(interstitial: FloatArray, offset_min: float, rng: np.random.Generator) -> Samples:
    minutes = len(interstitial)
    at = np.arange(0, minutes, PERIOD_MIN)
    err = noise(len(at), int(rng.integers(0, 2**32 - 1)))
    compression = np.zeros(minutes)
    artefacts: list[tuple[int, int]] = []
    first_night = -int(offset_min)  # minute of the first midnight at or before the start
    for midnight in range(first_night, minutes, 1440):
        if rng.random() >= COMPRESSION_PER_NIGHT:
            continue
        lo_h, hi_h = COMPRESSION_WINDOW_H
        start = midnight + int(rng.uniform(lo_h * 60, hi_h * 60))
        length = int(rng.uniform(*COMPRESSION_MIN))
        depth = float(rng.uniform(*COMPRESSION_DEPTH))
        lo, hi = max(0, start), min(minutes, start + length)
        if lo < hi:
            ramp = np.sin(np.pi * (np.arange(lo, hi) - start) / length)
            compression[lo:hi] -= depth * ramp
            artefacts.append((lo, hi))
    value = np.clip(interstitial[at] + err + compression[at], LO, HI)
    return Samples(at, np.round(value, 1).astype(np.float64), tuple(artefacts))
