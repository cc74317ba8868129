"""The usual CGM summary of a period, as care teams read it on an AGP report.

    glucose readings (t, mg/dL) over [start, end) -> GlucoseSummary

- Time in ranges, as shares of the readings, by the International Consensus on Time in
  Range (Battelino et al., Diabetes Care 2019): very low < 54, low 54-69, in range 70-180,
  high 181-250, very high > 250 mg/dL; its targets: in range > 70%, below 70 < 4%, below
  54 < 1%, CV <= 36%.
- GMI, the glucose management indicator (Bergenstal et al., Diabetes Care 2018):
  3.31 + 0.02392 x mean glucose in mg/dL, in %.
- CV: the standard deviation over the mean.
- CGM active: the share of the period's sensor slots with a reading. The consensus asks
  for 14 days at >= 70% before the figures are read as the patient's usual glycaemia:
  ``sufficient`` says whether this period meets it.
- The daily profile (AGP): the 5th, 25th, 50th, 75th and 95th percentiles of the readings
  in each hour of the local day, every day of the period on top of each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np


def band_masks(v: np.ndarray) -> dict[str, np.ndarray]:
    """The consensus's ranges as it writes them (mg/dL): below 54, 54 to below 70, 70 to
    180 inclusive, above 180 to 250 inclusive, above 250."""
    return {
        "very_low": v < 54.0,
        "low": (v >= 54.0) & (v < 70.0),
        "in_range": (v >= 70.0) & (v <= 180.0),
        "high": (v > 180.0) & (v <= 250.0),
        "very_high": v > 250.0,
    }


ZERO = timedelta(0)
MIN_DAYS = 14.0
MIN_ACTIVE = 0.70
PERCENTILES = (5.0, 25.0, 50.0, 75.0, 95.0)


@dataclass(frozen=True, slots=True)
class HourProfile:
    hour: int  # local hour of the day, 0-23
    n: int
    percentiles: tuple[float, ...]  # PERCENTILES, mg/dL


@dataclass(frozen=True, slots=True)
class GlucoseSummary:
    start: float
    end: float
    n: int
    active: float  # share of the period's sensor slots with a reading
    mean_mgdl: float
    sd_mgdl: float
    cv: float
    gmi_pct: float
    bands: dict[str, float]  # band_masks' names -> share of the readings
    profile: tuple[HourProfile, ...]

    @property
    def days(self) -> float:
        return (self.end - self.start) / 86400.0

    @property
    def sufficient(self) -> bool:
        return self.days >= MIN_DAYS and self.active >= MIN_ACTIVE


def local_hours(t: np.ndarray, zone: ZoneInfo) -> np.ndarray:
    """The local hour of the day of each time; the zone's offset is looked up once a
    quarter hour of the period (offsets and their changes fall on quarter hours), not
    once a reading (weeks of readings at 5-min intervals)."""
    quarter = np.floor(t / 900.0)
    unique, index = np.unique(quarter, return_inverse=True)
    offsets = np.array(
        [
            (
                datetime.fromtimestamp(q * 900.0, UTC).astimezone(zone).utcoffset() or ZERO
            ).total_seconds()
            for q in unique
        ]
    )
    hours: np.ndarray = (np.floor((t + offsets[index]) / 3600.0) % 24).astype(int)
    return hours


def summarize(
    t: np.ndarray, mgdl: np.ndarray, start: float, end: float, zone: ZoneInfo
) -> GlucoseSummary | None:
    """None when the period holds fewer than two readings."""
    keep = (t >= start) & (t < end)
    t, v = t[keep], mgdl[keep]
    if len(v) < 2:
        return None
    # The sensor's own interval (5 min on most, 1 or 15 on others), from its readings.
    interval = float(np.clip(np.median(np.diff(np.sort(t))), 60.0, 900.0))
    slots = len(np.unique(np.floor((t - start) / interval)))
    mean = float(v.mean())
    sd = float(v.std(ddof=1))
    bands = {name: float(mask.mean()) for name, mask in band_masks(v).items()}
    hours = local_hours(t, zone)
    profile = tuple(
        HourProfile(h, int(sel.sum()), tuple(float(p) for p in np.percentile(v[sel], PERCENTILES)))
        for h in range(24)
        if (sel := hours == h).any()
    )
    return GlucoseSummary(
        start=start,
        end=end,
        n=len(v),
        active=min(1.0, slots / ((end - start) / interval)),
        mean_mgdl=mean,
        sd_mgdl=sd,
        cv=sd / mean,
        gmi_pct=3.31 + 0.02392 * mean,
        bands=bands,
        profile=profile,
    )
