"""Time-series plots drawn as inline SVG on the server: no script, no asset from elsewhere
(the home may be offline), readable without colour (dashes and shapes tell series apart)
and described in words for screen readers (``aria-label``).

A Chart maps event time (epoch s) to x and a value range to y; its parts are drawn in the
order they are added, and the axes last: local-time ticks chosen for the span (hours for
a day, days for weeks), values on round numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import escape
from zoneinfo import ZoneInfo

# Tick spacings on the time axis (s), the first that gives at most MAX_TICKS wins.
TIME_STEPS = (
    3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86400,
    2 * 86400,
    7 * 86400,
    14 * 86400,
    28 * 86400,
)
MAX_TICKS = 8
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 48, 12, 20, 24

CHART_STYLE = """
svg.chart{width:100%;max-width:64rem;height:auto;background:#fff;display:block}
svg.chart text{font:11px system-ui,sans-serif;fill:#475467}
svg.chart .grid{stroke:#eef1f5} svg.chart .axis{stroke:#98a2b3}
svg.chart .target{fill:#e0f2e9} svg.chart .limit{stroke:#b42318;stroke-dasharray:4 3}
svg.chart .now{stroke:#1d2430;stroke-dasharray:2 2}
svg.chart .reading{fill:#1d2430} svg.chart .rejected{fill:#fff;stroke:#b42318}
svg.chart .estimate{fill:none;stroke:#1570ef;stroke-width:2}
svg.chart .band{fill:#1570ef;fill-opacity:.15}
svg.chart .cone{fill:#7a5af8;fill-opacity:.18}
svg.chart .cone-mean{fill:none;stroke:#7a5af8;stroke-width:2;stroke-dasharray:6 3}
svg.chart .range{stroke:#1d2430;stroke-width:2}
svg.chart .hi{fill:#1d2430} svg.chart .lo{fill:#fff;stroke:#1d2430}
svg.chart .bar{fill:#1570ef;fill-opacity:.7}
svg.chart .series{fill:none;stroke:#1d2430;stroke-width:1.5}
svg.chart .spread{fill:#98a2b3;fill-opacity:.3}
svg.chart .marker{fill:#b42318} svg.chart .marker.medium{fill:#f79009}
svg.chart .marker.low{fill:#fdb022}
svg.chart .unsure{fill:#fff;stroke:#1d2430}
svg.chart .carbs{fill:#12b76a} svg.chart .insulin{fill:#7a5af8}
svg.chart .dose{font-size:10px}
"""


def hour_text(t: datetime, clock_24h: bool) -> str:
    return f"{t:%H:%M}" if clock_24h else f"{t.hour % 12 or 12} {t:%p}"


def nice_step(span: float, ticks: int = 5) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving about ``ticks`` ticks."""
    raw = span / max(ticks, 1)
    if raw <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def value_range(values: Sequence[float], floor: float | None = None) -> tuple[float, float]:
    """A y range holding ``values`` with some room, on round numbers."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return (0.0, 1.0)
    lo, hi = min(finite), max(finite)
    if hi - lo < 1e-9:
        lo, hi = lo - 1.0, hi + 1.0
    step = nice_step(hi - lo)
    lo, hi = math.floor(lo / step) * step, math.ceil(hi / step) * step
    if floor is not None:
        lo = max(lo, floor)
    return lo, hi


@dataclass
class Chart:
    label: str  # what the chart shows, in words (aria-label)
    t0: float
    t1: float
    y0: float
    y1: float
    zone: ZoneInfo
    unit: str = ""
    width: int = 720
    height: int = 220
    x_ticks: list[tuple[float, str]] | None = None  # instead of time ticks
    clock_24h: bool = True
    parts: list[str] = field(default_factory=list)

    def x(self, t: float) -> float:
        span = self.t1 - self.t0 or 1.0
        return PAD_LEFT + (t - self.t0) / span * (self.width - PAD_LEFT - PAD_RIGHT)

    def y(self, v: float) -> float:
        span = self.y1 - self.y0 or 1.0
        v = min(max(v, self.y0), self.y1)  # clipped to the frame, never drawn outside
        return (
            self.height - PAD_BOTTOM - (v - self.y0) / span * (self.height - PAD_TOP - PAD_BOTTOM)
        )

    def _inside(self, t: float) -> bool:
        return self.t0 <= t <= self.t1

    def hband(self, lo: float, hi: float, cls: str, title: str) -> None:
        """A horizontal band (a target range)."""
        top, bottom = self.y(hi), self.y(lo)
        self.parts.append(
            f'<rect class="{cls}" x="{PAD_LEFT}" y="{top:.1f}"'
            f' width="{self.width - PAD_LEFT - PAD_RIGHT}" height="{bottom - top:.1f}">'
            f"<title>{escape(title)}</title></rect>"
        )

    def hline(self, v: float, cls: str, title: str) -> None:
        y = self.y(v)
        self.parts.append(
            f'<line class="{cls}" x1="{PAD_LEFT}" x2="{self.width - PAD_RIGHT}"'
            f' y1="{y:.1f}" y2="{y:.1f}"><title>{escape(title)}</title></line>'
        )

    def vline(self, t: float, cls: str, title: str) -> None:
        if not self._inside(t):
            return
        x = self.x(t)
        self.parts.append(
            f'<line class="{cls}" x1="{x:.1f}" x2="{x:.1f}" y1="{PAD_TOP}"'
            f' y2="{self.height - PAD_BOTTOM}"><title>{escape(title)}</title></line>'
        )

    def area(self, pts: Sequence[tuple[float, float, float]], cls: str) -> None:
        """A band between lo and hi along time: (t, lo, hi)."""
        pts = [p for p in pts if self._inside(p[0])]
        if len(pts) < 2:
            return
        upper = " ".join(f"{self.x(t):.1f},{self.y(hi):.1f}" for t, _, hi in pts)
        lower = " ".join(f"{self.x(t):.1f},{self.y(lo):.1f}" for t, lo, _ in reversed(pts))
        self.parts.append(f'<polygon class="{cls}" points="{upper} {lower}"/>')

    def line(self, pts: Sequence[tuple[float, float]], cls: str, gap_s: float = math.inf) -> None:
        """A line through (t, v), broken where readings are more than ``gap_s`` apart (a
        line across a gap would show data that was never measured)."""
        runs: list[list[tuple[float, float]]] = [[]]
        prev = None
        for t, v in pts:
            if not self._inside(t):
                continue
            if prev is not None and t - prev > gap_s:
                runs.append([])
            runs[-1].append((t, v))
            prev = t
        for run in runs:
            if len(run) >= 2:
                d = " ".join(f"{self.x(t):.1f},{self.y(v):.1f}" for t, v in run)
                self.parts.append(f'<polyline class="{cls}" points="{d}"/>')

    def dots(self, pts: Sequence[tuple[float, float]], cls: str, r: float = 2.0) -> None:
        self.parts.append(
            "".join(
                f'<circle class="{cls}" cx="{self.x(t):.1f}" cy="{self.y(v):.1f}" r="{r}"/>'
                for t, v in pts
                if self._inside(t)
            )
        )

    def ranges(self, pts: Sequence[tuple[float, float, float]], cls: str) -> None:
        """Paired values at one time, joined (systolic over diastolic): (t, lo, hi)."""
        for t, lo, hi in pts:
            if self._inside(t):
                x = self.x(t)
                self.parts.append(
                    f'<line class="{cls}" x1="{x:.1f}" x2="{x:.1f}" y1="{self.y(hi):.1f}"'
                    f' y2="{self.y(lo):.1f}"/><circle class="hi" cx="{x:.1f}"'
                    f' cy="{self.y(hi):.1f}" r="3"/><circle class="lo" cx="{x:.1f}"'
                    f' cy="{self.y(lo):.1f}" r="3"/>'
                )

    def bars(self, pts: Sequence[tuple[float, float, float]], cls: str) -> None:
        """(t start, t end, value) bars from the bottom of the frame."""
        base = self.y(self.y0)
        for a, b, v in pts:
            if b <= self.t0 or a >= self.t1:
                continue
            xa, xb = self.x(max(a, self.t0)), self.x(min(b, self.t1))
            top = self.y(v)
            self.parts.append(
                f'<rect class="{cls}" x="{xa + 1:.1f}" y="{top:.1f}"'
                f' width="{max(xb - xa - 2, 1):.1f}" height="{base - top:.1f}"/>'
            )

    def markers(self, pts: Sequence[tuple[float, str, str]]) -> None:
        """Alarm markers along the top: (t, priority, what it was)."""
        for t, priority, title in pts:
            if self._inside(t):
                x = self.x(t)
                self.parts.append(
                    f'<path class="marker {escape(priority)}" data-marker="alarm"'
                    f' d="M{x - 5:.1f},{PAD_TOP - 10} L{x + 5:.1f},{PAD_TOP - 10}'
                    f' L{x:.1f},{PAD_TOP - 2}Z">'
                    f"<title>{escape(title)}</title></path>"
                )

    def doses(self, pts: Sequence[tuple[float, str, str, str]]) -> None:
        """Treatments along the bottom: (t, class, short label, what it was); carbohydrates
        a square, insulin a diamond (told apart without colour), the amount beside it."""
        base = self.height - PAD_BOTTOM - 8
        for t, cls, label, title in pts:
            if not self._inside(t):
                continue
            x = self.x(t)
            shape = (
                f'<rect x="{x - 4:.1f}" y="{base - 4}" width="8" height="8"/>'
                if cls == "carbs"
                else f'<path d="M{x:.1f},{base - 5} L{x + 5:.1f},{base} L{x:.1f},{base + 5}'
                f' L{x - 5:.1f},{base}Z"/>'
            )
            self.parts.append(
                f'<g class="{escape(cls)}" data-marker="{escape(cls)}">{shape}'
                f'<text class="dose" x="{x + 6:.1f}" y="{base + 3}">{escape(label)}</text>'
                f"<title>{escape(title)}</title></g>"
            )

    def _time_ticks(self) -> list[tuple[float, str]]:
        """Local wall-clock ticks: on whole hours (a multiple of the step) for spans up to
        a few days, on local midnights beyond; a midnight is labelled with its date."""
        span = self.t1 - self.t0
        step = next((s for s in TIME_STEPS if span / s <= MAX_TICKS), TIME_STEPS[-1])
        out = []
        if step < 86400:
            # Quarter hours: a local whole hour is one in every zone (+05:30, +05:45 too).
            t = math.ceil(self.t0 / 900.0) * 900.0
            while t <= self.t1:
                local = datetime.fromtimestamp(t, UTC).astimezone(self.zone)
                if local.minute == 0 and (local.hour * 3600) % step == 0:
                    text = (
                        f"{local.day} {local:%b}"
                        if local.hour == 0
                        else hour_text(local, self.clock_24h)
                    )
                    out.append((t, text))
                t += 900.0
            return out
        day = datetime.fromtimestamp(self.t0, UTC).astimezone(self.zone).date()
        every = step // 86400
        for i in range(int(span // 86400) + 2):
            d = day + timedelta(days=i)
            midnight = datetime(d.year, d.month, d.day, tzinfo=self.zone).timestamp()
            if self.t0 <= midnight <= self.t1 and d.toordinal() % every == 0:
                out.append((midnight, f"{d.day} {d:%b}"))
        return out

    def _axes(self) -> str:
        bottom = self.height - PAD_BOTTOM
        out = []
        step = nice_step(self.y1 - self.y0)
        v = math.ceil(self.y0 / step) * step
        while v <= self.y1 + 1e-9:
            y = self.y(v)
            label = f"{v:g}"
            out.append(
                f'<line class="grid" x1="{PAD_LEFT}" x2="{self.width - PAD_RIGHT}"'
                f' y1="{y:.1f}" y2="{y:.1f}"/><text x="{PAD_LEFT - 4}" y="{y + 4:.1f}"'
                f' text-anchor="end">{label}</text>'
            )
            v += step
        for t, text in self.x_ticks if self.x_ticks is not None else self._time_ticks():
            x = self.x(t)
            out.append(
                f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 4}"/>'
                f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">{escape(text)}</text>'
            )
        out.append(
            f'<line class="axis" x1="{PAD_LEFT}" x2="{self.width - PAD_RIGHT}"'
            f' y1="{bottom}" y2="{bottom}"/>'
            f'<text x="4" y="12">{escape(self.unit)}</text>'
        )
        return "".join(out)

    def svg(self, name: str) -> str:
        axes = self._axes()
        return (
            f'<svg class="chart" data-chart="{escape(name)}" role="img"'
            f' aria-label="{escape(self.label)}" viewBox="0 0 {self.width} {self.height}"'
            f' xmlns="http://www.w3.org/2000/svg">{axes}{"".join(self.parts)}</svg>'
        )
