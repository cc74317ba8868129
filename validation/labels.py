"""Hypoglycaemia labels read off the true plasma glucose, never off the CGM.

The same definition as our own simulator and training (HYPO_MGDL, HYPO_MIN_MINUTES in
firmware_sim/physiology/glucose.py; episodes() in models/hypo.py), after the consensus
on time in range (Battelino et al. 2019):
every stretch below 70 mg/dL lasting at least 15 minutes, from its onset (first minute
below 70) to its end (first minute back at or above 70). A low still running at the end
of the record ends at the minute after the last one.
"""

from __future__ import annotations

import numpy as np

from firmware_sim.physiology.glucose import HYPO_MGDL, HYPO_MIN_MINUTES
from validation.uva_padova import FloatArray


def lows(plasma: FloatArray, start: float) -> tuple[tuple[float, float], ...]:
    """(onset, end) in epoch seconds for a 1-minute series starting at ``start``."""
    below = np.concatenate(([False], plasma < HYPO_MGDL, [False]))
    edges = np.flatnonzero(np.diff(below.astype(np.int8)))
    return tuple(
        (start + float(first) * 60.0, start + float(end) * 60.0)
        for first, end in zip(edges[::2], edges[1::2], strict=True)
        if end - first >= HYPO_MIN_MINUTES
    )
