"""The obvious low-glucose alarms a care team would hold the gateway's against, computed on
the raw readings as they arrive (the readings a CGM app shows, no twin):

    threshold   a reading below the low threshold raises; a reading at or above it clears
    line        the least-squares line through the readings of the last LINE_WINDOW_MIN
                (>= 3 of them) projected ``ahead_min`` ahead: below the threshold, or the
                reading itself below it, raises; clears when neither holds

Each is evaluated at every arrival that is the newest reading by device time (a late
reading changes the window of the next evaluation, as in the gateway), and its alarms
carry the arrival time. As the gateway, neither raises on a reading that arrives more than
BACKFILL_AFTER_S after it was taken (backfilled data raises no alarm: IEC 60601-1-8
practice; the gateway's ``ingest.backfill_after_s``), but such a reading may clear one.
``ahead_min`` is tuned on the training cohorts to the predicted-low model's false-alarm
budget (models/hypo.py), never on the cohort it is scored on.
"""

from __future__ import annotations

from collections.abc import Sequence

from edge_twin.assess.hypo_predictor import fit_line

LOW_MGDL = 70.0
BACKFILL_AFTER_S = 600.0
LINE_WINDOW_MIN = 20.0
AHEAD_CANDIDATES_MIN = tuple(float(m) for m in range(0, 61, 5))

# (device time, value, arrival time): one delivered reading
Arrival = tuple[float, float, float]


def _evaluations(
    arrivals: Sequence[Arrival],
) -> list[tuple[float, list[float], list[float], bool]]:
    """(arrival time, times, values, live) of the readings known at each arrival that is
    the newest by device time; duplicates (same device time) count once."""
    seen: dict[float, float] = {}
    newest = float("-inf")
    out = []
    for t, value, received in arrivals:
        if t in seen:
            continue
        seen[t] = value
        if t <= newest:
            continue
        newest = t
        window = sorted((s, v) for s, v in seen.items() if t - s <= LINE_WINDOW_MIN * 60 + 1)
        live = received - t <= BACKFILL_AFTER_S
        out.append((received, [s for s, _ in window], [v for _, v in window], live))
    return out


def threshold_alarms(arrivals: Sequence[Arrival], low: float = LOW_MGDL) -> list[float]:
    out, active = [], False
    for received, _, values, live in _evaluations(arrivals):
        present = values[-1] < low and (live or active)
        if present and not active:
            out.append(received)
        active = present
    return out


def line_alarms(
    arrivals: Sequence[Arrival], ahead_min: float, low: float = LOW_MGDL
) -> list[float]:
    out, active = [], False
    for received, times, values, live in _evaluations(arrivals):
        fit = fit_line(times, values, LINE_WINDOW_MIN)
        projected = fit.level + ahead_min * fit.slope if fit is not None else values[-1]
        present = (values[-1] < low or projected < low) and (live or active)
        if present and not active:
            out.append(received)
        active = present
    return out
