"""One patient's page for the care team (and for the patient, their own): plots of every
signal with what the twin made of them, the glucose summary of a period, the alarms with
acknowledge and pause, and their audit trail.

- Glucose over the last hours: the target range, the patient's low thresholds, each
  reading (hollow where the twin's gate rejected it as implausible), the twin's estimate
  with its 95% band, and from now its forecast cone for the next hour; alarms marked
  along the top.
- The period (days): time in ranges, mean, GMI, CV, CGM active and the daily profile
  (assess/glucose_summary.py); blood pressure as systolic over diastolic per measurement;
  weight with its 3- and 7-day change; heart rate, SpO2 and breathing rate as means per
  bin with their range; steps per local day; the decompensation risk over time with its
  threshold, hollow where its inputs were mostly unknown.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from html import escape
from typing import Any

from edge_twin.api.dashboard import (
    LIVE_BADGE,
    NAMES,
    PAGE_SCRIPT,
    STYLE,
    Display,
    alarm_list,
    banner,
)
from edge_twin.api.plots import CHART_STYLE, Chart, value_range
from edge_twin.api.views import PatientTimeline
from edge_twin.assess import GlucoseSummary
from edge_twin.clock import to_iso
from edge_twin.domain import ReadingFlag, Signal

PERIOD_DAYS = (1, 7, 14, 30, 90)
GLUCOSE_HOURS = (3, 6, 12, 24, 72)
FORECAST_S = 3600.0
GAP_S = 20 * 60.0  # a CGM line is broken across a longer silence
WEIGHT_CHANGE_DAYS = (3, 7)
BAND_WORDS = (
    ("very_high", "Very high (> 250 mg/dL)", "< 5%"),
    ("high", "High (181-250 mg/dL)", "< 25% with very high"),
    ("in_range", "In range (70-180 mg/dL)", "> 70%"),
    ("low", "Low (54-69 mg/dL)", "< 4% with very low"),
    ("very_low", "Very low (< 54 mg/dL)", "< 1%"),
)
BAND_COLOURS = {
    "very_high": "#f79009",
    "high": "#fdb022",
    "in_range": "#12b76a",
    "low": "#f04438",
    "very_low": "#912018",
}


def _glucose_chart(h: PatientTimeline, show: Display) -> str:
    if not h.glucose and "glucose" not in h.state["signals"]:
        return "<p class=muted>No glucose readings in this window.</p>"
    v = partial(show.value, Signal.GLUCOSE)
    top = max([300.0, *(g[1] for g in h.glucose)])
    chart = Chart(
        "Glucose readings, the twin's estimate with its 95% band and its forecast for the"
        " next hour, over the target range",
        h.glucose_start,
        h.now + FORECAST_S,
        v(40.0),
        v(top),
        show.zone,
        clock_24h=show.clock_24h,
        unit=show.unit(Signal.GLUCOSE),
    )
    chart.hband(v(70.0), v(180.0), "target", "target range 70-180 mg/dL")
    s = h.settings
    chart.hline(v(s.low_mgdl), "limit", f"low alarm at {v(s.low_mgdl):g}")
    chart.hline(v(s.urgent_low_mgdl), "limit", f"urgent low alarm at {v(s.urgent_low_mgdl):g}")
    z = 1.959963984540054
    chart.area([(p.t, v(p.mean - z * p.sd), v(p.mean + z * p.sd)) for p in h.glucose_trace], "band")
    chart.line([(p.t, v(p.mean)) for p in h.glucose_trace], "estimate", GAP_S)
    rejected = {p.t for p in h.glucose_trace if p.gated}
    chart.dots([(t, v(g)) for t, g, _ in h.glucose if t not in rejected], "reading")
    chart.dots([(t, v(g)) for t, g, _ in h.glucose if t in rejected], "rejected", 3)
    now_state = h.state["signals"].get("glucose")
    if now_state is not None and not now_state["stale"]:
        at = datetime.fromisoformat(now_state["at"]).timestamp()
        cone = [(at, *now_state["interval95"], now_state["mean"])] + [
            (at + f["horizon_min"] * 60.0, *f["interval95"], f["mean"])
            for f in now_state["forecasts"]
        ]
        chart.area([(t, v(lo), v(hi)) for t, lo, hi, _ in cone], "cone")
        chart.line([(t, v(m)) for t, _, _, m in cone], "cone-mean")
    chart.vline(h.now, "now", "now")
    chart.markers(_markers(h, h.glucose_start))
    chart.doses(_doses(h, show))
    late = sum(1 for _, _, f in h.glucose if f & ReadingFlag.BACKFILLED)
    doses = (
        " Along the bottom, from the patient's phone: squares carbohydrates (g), diamonds"
        " insulin (U)."
        if h.treatments
        else ""
    )
    legend = (
        "<p class=muted>dots: readings (hollow: rejected by the twin as implausible);"
        " blue line and band: the twin's estimate and its 95% interval; purple: its"
        " forecast for the next hour with its 95% cone; green: target range; dashed red:"
        f" this patient's low alarms; triangles: alarms.{doses}"
        f"{f' {late} readings arrived late (backfilled).' if late else ''}</p>"
    )
    return chart.svg("glucose") + legend


def _doses(h: PatientTimeline, show: Display) -> list[tuple[float, str, str, str]]:
    """The treatments' marks: a meal bolus gives both a carbohydrate and an insulin mark."""
    out = []
    now = datetime.fromtimestamp(h.now, UTC)
    for x in h.treatments:
        at = show.when(to_iso(x.t), now)
        if x.carbs_g is not None:
            out.append(
                (x.t, "carbs", f"{x.carbs_g:g} g", f"{x.event_type}: {x.carbs_g:g} g at {at}")
            )
        if x.insulin_u is not None:
            out.append(
                (x.t, "insulin", f"{x.insulin_u:g} U", f"{x.event_type}: {x.insulin_u:g} U at {at}")
            )
    return out


def _period_chart(
    h: PatientTimeline, show: Display, label: str, lo: float, hi: float, unit: str, height: int
) -> Chart:
    """A chart over the page's period, in the user's zone and clock."""
    return Chart(
        label, h.start, h.now, lo, hi, show.zone, unit, height=height, clock_24h=show.clock_24h
    )


def _markers(h: PatientTimeline, start: float, types: set[str] | None = None) -> list[Any]:
    return [
        (a.raised_at, a.priority.value, f"{a.alarm_type.replace('_', ' ')}: {a.reason}")
        for a in h.alarms
        if a.raised_at >= start and (types is None or a.alarm_type in types)
    ]


def _summary(g: GlucoseSummary | None, show: Display, now: datetime) -> str:
    if g is None:
        return "<p class=muted>No glucose readings in this period.</p>"
    d = show.digits(Signal.GLUCOSE)
    unit = show.unit(Signal.GLUCOSE)
    x = 0.0
    bar = []
    for name, words, _ in reversed(BAND_WORDS):
        share = g.bands[name]
        bar.append(
            f'<rect x="{x:.1f}" y="0" width="{share * 600:.1f}" height="24"'
            f' fill="{BAND_COLOURS[name]}"><title>{escape(words)} {100 * share:.0f}%</title></rect>'
        )
        x += share * 600
    rows = "".join(
        f'<tr data-band="{name}"><td>{escape(words)}</td><td class=num>'
        f"{100 * g.bands[name]:.1f}%</td><td class=muted>{escape(target)}</td></tr>"
        for name, words, target in BAND_WORDS
    )
    caveat = ""
    if not g.sufficient:
        caveat = (
            f"<p class=stale>Read with care: {g.days:.0f} days at {100 * g.active:.0f}% CGM"
            " use; the consensus asks for 14 days at 70% or more.</p>"
        )
    agp = _profile_chart(g, show)
    return (
        f'<div data-summary="glucose">{caveat}'
        f'<svg class="chart" viewBox="0 0 600 24" role="img" aria-label="time in ranges">'
        f"{''.join(bar)}</svg>"
        "<table><thead><tr><th>time in range</th><th>share</th><th>target</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        "<table><tbody>"
        f"<tr><td>Mean glucose</td><td class=num>{show.value(Signal.GLUCOSE, g.mean_mgdl):.{d}f}"
        f" {escape(unit)}</td></tr>"
        f'<tr><td>GMI</td><td class=num data-metric="gmi">{g.gmi_pct:.1f}%</td></tr>'
        f'<tr><td>Glucose variability (CV)</td><td class=num data-metric="cv">{100 * g.cv:.1f}%'
        " <span class=muted>(target 36% or less)</span></td></tr>"
        f"<tr><td>CGM active</td><td class=num>{100 * g.active:.0f}% of {g.days:.0f} days"
        f" ({g.n} readings)</td></tr></tbody></table>"
        f"<h3>Daily profile</h3>{agp}</div>"
    )


def _profile_chart(g: GlucoseSummary, show: Display) -> str:
    v = partial(show.value, Signal.GLUCOSE)
    top = max([300.0, *(p.percentiles[-1] for p in g.profile)])
    chart = Chart(
        "Daily glucose profile: median, 25-75th and 5-95th percentiles by hour of the day",
        0.0,
        24.0,
        v(40.0),
        v(top),
        show.zone,
        clock_24h=show.clock_24h,
        unit=show.unit(Signal.GLUCOSE),
        x_ticks=[(float(h), f"{h:02d}:00") for h in range(0, 25, 3)],
    )
    chart.hband(v(70.0), v(180.0), "target", "target range 70-180 mg/dL")
    mid = [(p.hour + 0.5, p.percentiles) for p in g.profile]
    chart.area([(x, v(q[0]), v(q[4])) for x, q in mid], "spread")
    chart.area([(x, v(q[1]), v(q[3])) for x, q in mid], "band")
    chart.line([(x, v(q[2])) for x, q in mid], "estimate", gap_s=1.5)
    return chart.svg("glucose-profile") + (
        "<p class=muted>line: median by hour of the day; dark band: half the readings"
        " (25-75th percentile); light band: 90% of them (5-95th).</p>"
    )


def _bp_chart(h: PatientTimeline, show: Display) -> str:
    if not h.blood_pressure:
        return "<p class=muted>No blood pressure readings in this period.</p>"
    lo, hi = value_range([v for _, d, s in h.blood_pressure for v in (d, s)] + [60.0, 170.0])
    label = "Blood pressure: each measurement's systolic over its diastolic"
    chart = _period_chart(h, show, label, lo, hi, "mmHg", 220)
    s = h.settings
    chart.hline(s.bp_systolic_mmhg, "limit", f"systolic alarm at {s.bp_systolic_mmhg:g}")
    chart.hline(s.bp_diastolic_mmhg, "limit", f"diastolic alarm at {s.bp_diastolic_mmhg:g}")
    chart.ranges(h.blood_pressure, "range")
    chart.markers(_markers(h, h.start, {"bp_high_sustained"}))
    return chart.svg("blood-pressure") + (
        "<p class=muted>filled dot: systolic; hollow dot: diastolic; dashed red: this"
        " patient's alarm levels.</p>"
    )


def weight_change(weights: list[tuple[float, float]], days: float) -> float | None:
    """The newest weight minus the newest one at least ``days`` before it (within a day
    more): None when there is none to compare."""
    if not weights:
        return None
    t_last, w_last = weights[-1]
    earlier = [
        (t, w) for t, w in weights if t_last - (days + 1) * 86400 <= t <= t_last - days * 86400
    ]
    return None if not earlier else w_last - earlier[-1][1]


def _weight_chart(h: PatientTimeline, show: Display) -> str:
    if not h.weight:
        return "<p class=muted>No weight readings in this period.</p>"
    lo, hi = value_range([w for _, w in h.weight])
    chart = _period_chart(h, show, "Weight", lo, hi, "kg", 220)
    chart.line(h.weight, "series", gap_s=3 * 86400)
    chart.dots(h.weight, "reading", 3)
    chart.markers(_markers(h, h.start, {"decompensation_risk"}))
    changes = []
    for days in WEIGHT_CHANGE_DAYS:
        c = weight_change(h.weight, days)
        text = "not enough weighings" if c is None else f"{c:+.1f} kg"
        changes.append(f'<span data-weight-change="{days}">{days}-day change: <b>{text}</b></span>')
    return f"<p>{' &middot; '.join(changes)}</p>" + chart.svg("weight")


def _vital_chart(h: PatientTimeline, signal: Signal, show: Display) -> str:
    bins = h.vitals.get(signal, [])
    name = NAMES[signal]
    if not bins:
        return f"<p class=muted>No {escape(name.lower())} readings in this period.</p>"
    lo, hi = value_range([b[2] for b in bins] + [b[3] for b in bins])
    half = h.vitals_bin_s / 2
    label = f"{name}: mean per {h.vitals_bin_s / 3600:g} h with its range"
    chart = _period_chart(h, show, label, lo, hi, show.unit(signal), 160)
    chart.area([(b + half, mn, mx) for b, _, mn, mx, _ in bins], "spread")
    chart.line([(b + half, m) for b, m, _, _, _ in bins], "series", gap_s=2 * h.vitals_bin_s)
    return f"<h3>{escape(name)}</h3>" + chart.svg(signal.value)


def _steps_chart(h: PatientTimeline, show: Display) -> str:
    if not h.daily_steps:
        return "<p class=muted>No steps counted in this period.</p>"
    top = max(s for _, _, s in h.daily_steps)
    _, hi = value_range([0.0, top])
    chart = _period_chart(h, show, "Steps per day", 0.0, hi, "steps", 160)
    chart.bars(h.daily_steps, "bar")
    return chart.svg("steps")


def _risk_chart(h: PatientTimeline, show: Display) -> str:
    if not h.risks:
        return "<p class=muted>No decompensation risk assessed in this period.</p>"
    threshold = h.risks[-1].threshold * 100
    top = max([threshold * 2, *(100 * r.probability for r in h.risks)])
    _, hi = value_range([0.0, min(top, 100.0)])
    label = "Decompensation risk over time with the model's alert threshold"
    chart = _period_chart(h, show, label, 0.0, hi, "%", 180)
    chart.hline(threshold, "limit", f"alert threshold {threshold:.0f}%")
    sure = [(r.t, 100 * r.probability) for r in h.risks if r.confidence != "low"]
    unsure = [(r.t, 100 * r.probability) for r in h.risks if r.confidence == "low"]
    chart.line(sure, "series", gap_s=2 * 86400)
    chart.dots(sure, "reading", 2.5)
    chart.dots(unsure, "unsure", 3)
    chart.markers(_markers(h, h.start, {"decompensation_risk"}))
    return chart.svg("risk") + (
        "<p class=muted>hollow: assessed from mostly unknown inputs (insufficient data);"
        " dashed red: the model's alert threshold; triangles: alarms.</p>"
    )


def _audit(h: PatientTimeline, show: Display, now: datetime) -> str:
    rows: list[tuple[float, str]] = []
    for e, kind in h.events:
        rows.append(
            (
                e.at,
                f'<tr data-audit="alarm"><td>{show.when(to_iso(e.at), now)}</td>'
                f"<td>{escape(kind.replace('_', ' '))}</td><td>{escape(e.event)}</td>"
                f"<td>{escape(e.actor)}</td><td>{escape(e.reason)}</td></tr>",
            )
        )
    for a in h.audit:
        if a.at < h.start:
            continue
        what = f"{a.action} {a.outcome}"
        change = f"{_brief(a.old)} &rarr; {_brief(a.new)}"
        rows.append(
            (
                a.at,
                f'<tr data-audit="{escape(a.action)}"><td>{show.when(to_iso(a.at), now)}</td>'
                f"<td>{escape((a.alarm_type or 'settings').replace('_', ' '))}</td>"
                f"<td>{escape(what)}: {change}</td><td>{escape(a.actor)}</td>"
                f"<td>{escape(a.reason)}</td></tr>",
            )
        )
    if not rows:
        return "<p class=muted>Nothing happened to this patient's alarms in this period.</p>"
    rows.sort(key=lambda r: -r[0])
    return (
        "<table><thead><tr><th>when</th><th>alarm</th><th>what happened</th><th>who</th>"
        f"<th>why</th></tr></thead><tbody>{''.join(r for _, r in rows)}</tbody></table>"
    )


def _brief(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, dict):
        return escape(", ".join(f"{k} {v}" for k, v in value.items()))
    return escape(str(value))


def _controls(h: PatientTimeline, days: int, hours: int) -> str:
    def options(values: tuple[int, ...], chosen: int, unit: str) -> str:
        return "".join(
            f'<option value="{n}"{" selected" if n == chosen else ""}>{n} {unit}</option>'
            for n in values
        )

    return (
        '<form class="period" method="get">'
        f'<label>glucose plot <select name="hours">{options(GLUCOSE_HOURS, hours, "h")}'
        "</select></label> "
        f'<label>period <select name="days">{options(PERIOD_DAYS, days, "days")}</select>'
        '</label> <button type="submit">Show</button></form>'
    )


def render(
    gateway_id: str,
    h: PatientTimeline,
    show: Display,
    days: int,
    hours: int,
    problems: list[str],
    back: str,
    can_pause: bool = True,
) -> str:
    """``can_pause``: the user may pause alarms (a care team; a patient acknowledges)."""
    now = datetime.fromtimestamp(h.now).astimezone(show.zone)
    pid = escape(h.patient_id)
    glucose = (
        _glucose_chart(h, show)
        if h.glucose or "glucose" in h.state["signals"]
        else ("<p class=muted>No glucose readings.</p>")
    )
    vitals = "".join(_vital_chart(h, s, show) for s in h.vitals)
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Patient {pid}: edge-twin</title><style>{STYLE}{CHART_STYLE}</style>"
        f"<script>{PAGE_SCRIPT}</script></head><body data-refresh-s=60>"
        f'<p><a href="{escape(back)}">&larr; back</a></p>'
        f"<h1>Patient {pid}</h1>{banner(problems)}"
        f"<p class=muted>{LIVE_BADGE} gateway {escape(gateway_id)} &middot;"
        f" as of {show.when(to_iso(h.now), now)}"
        f' ({escape(str(show.zone))}) &middot; <a href="/settings">settings</a></p>'
        f"{_controls(h, days, hours)}"
        f'<section data-section="alarms"><h2>Alarms</h2>'
        f"{alarm_list(h.open_alarms, show, now, can_pause) or '<p class=muted>No open alarms.</p>'}"
        "</section>"
        f'<section data-section="glucose"><h2>Glucose, last {hours} h</h2>{glucose}</section>'
        f'<section data-section="glucose-summary"><h2>Glucose over {days} days</h2>'
        f"{_summary(h.glucose_summary, show, now)}</section>"
        f'<section data-section="risk"><h2>Decompensation risk</h2>{_risk_chart(h, show)}</section>'
        f'<section data-section="weight"><h2>Weight</h2>{_weight_chart(h, show)}</section>'
        f'<section data-section="blood-pressure"><h2>Blood pressure</h2>{_bp_chart(h, show)}'
        "</section>"
        f'<section data-section="vitals"><h2>Heart rate, SpO&#8322;, breathing</h2>{vitals}'
        "</section>"
        f'<section data-section="steps"><h2>Steps per day</h2>{_steps_chart(h, show)}</section>'
        f'<section data-section="audit"><h2>Alarm audit trail, {days} days</h2>'
        f"{_audit(h, show, now)}</section></body></html>"
    )
