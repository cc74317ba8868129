"""Missing data on purpose: remove readings in long gaps, as when a device is not worn, is
flat or sits in a drawer for days (the benches' and the training's missingness)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def gap_mask(
    t: npt.NDArray[np.float64],
    level: float,
    shortest_s: float,
    longest_s: float,
    rng: np.random.Generator,
) -> npt.NDArray[np.bool_]:
    """True for readings inside gaps of shortest_s..longest_s placed at random until at
    least ``level`` of the readings are removed."""
    removed = np.zeros(len(t), dtype=bool)
    if level <= 0 or len(t) == 0:
        return removed
    lo, hi = float(t.min()), float(t.max())
    while removed.mean() < level:
        start = rng.uniform(lo - shortest_s, hi)
        removed |= (t >= start) & (t < start + rng.uniform(shortest_s, longest_s))
    return removed
