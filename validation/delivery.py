"""What reaches the gateway: lost samples, and readings delivered late, twice or in bursts.

Loss: about a third of the samples, mostly in long gaps (sensor off, phone away: gaps of
30 min - 6 h placed at random until ~25 % is removed, firmware_sim.missing.gap_mask)
plus single dropouts (~8 %). Every sample keeps
its ``seq`` (counting every sample taken, sent or lost, like our firmware), so a gap
shows as a jump in seq.

Delivery of the rest: received 5-60 s after the sample normally; ~5 % held back 5-60 min
(so they arrive after later readings: out of order); ~3 % delivered a second time later;
~1 backfill a patient-day, where the link was down 30-120 min and everything taken in
that time arrives together when it comes back.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from firmware_sim.missing import gap_mask
from validation.uva_padova import FloatArray

GAP_LEVEL = 0.25
GAP_S = (30 * 60.0, 6 * 3600.0)
P_DROPOUT = 0.08
DELAY_S = (5.0, 60.0)
P_LATE = 0.05
LATE_S = (5 * 60.0, 60 * 60.0)
P_DUPLICATE = 0.03
DUPLICATE_AFTER_S = (60.0, 30 * 60.0)
BACKFILL_PER_DAY = 1.0
BACKFILL_S = (30 * 60.0, 120 * 60.0)

Reading = tuple[float, float, int, float]  # (device time t, value, seq, received_at)


def lost(t: FloatArray, rng: np.random.Generator) -> npt.NDArray[np.bool_]:
    """Which samples never reach the gateway: long gaps, then single dropouts."""
    return gap_mask(t, GAP_LEVEL, *GAP_S, rng) | (rng.random(len(t)) < P_DROPOUT)


def deliver(
    t: FloatArray, value: FloatArray, seq: npt.NDArray[np.int64], rng: np.random.Generator
) -> tuple[Reading, ...]:
    """The delivered readings (t, value, seq, received_at) in arrival order."""
    n = len(t)
    received = t + rng.uniform(*DELAY_S, size=n)
    in_burst = np.zeros(n, dtype=bool)
    if n:
        days = (float(t[-1]) - float(t[0])) / 86400.0
        for _ in range(int(rng.poisson(BACKFILL_PER_DAY * days))):
            start = rng.uniform(float(t[0]), float(t[-1]))
            end = start + rng.uniform(*BACKFILL_S)
            inside = (t >= start) & (t < end)
            # Back online at ``end``: the backlog goes out oldest first, 0.2 s apart.
            received[inside] = end + rng.uniform(*DELAY_S) + 0.2 * np.arange(inside.sum())
            in_burst |= inside
    late = ~in_burst & (rng.random(n) < P_LATE)
    received[late] = t[late] + rng.uniform(*LATE_S, size=int(late.sum()))
    rows: list[Reading] = [
        (float(t[i]), float(value[i]), int(seq[i]), float(received[i])) for i in range(n)
    ]
    again = np.flatnonzero(rng.random(n) < P_DUPLICATE)
    after = rng.uniform(*DUPLICATE_AFTER_S, size=len(again))
    rows += [
        (rows[i][0], rows[i][1], rows[i][2], rows[i][3] + float(a))
        for i, a in zip(again, after, strict=True)
    ]
    rows.sort(key=lambda r: (r[3], r[2]))
    return tuple(rows)
