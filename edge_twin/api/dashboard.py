"""The care-team dashboard: one server-rendered page, no JavaScript framework (a few lines
of script to act on alarms), usable on a phone (viewport), refreshing itself every 15 s
unless someone is typing.

Triage first: patients ordered by their open alarms (high, then medium, then low
priority), then by decompensation risk. Each patient shows their open alarms in words,
with acknowledge and pause (a reason required, kept in the audit log),
every signal's estimate with its 95% interval in the unit people read (glucose in the
deployment's mg/dL or mmol/L), when it was last measured in words and local time (a cuff
reading this morning is "today 07:40", not "live"), a STALE badge when it may not be acted
on, the 30/60-min forecast kept inside the signal's plausible range, the probability of a
low; the latest decompensation risk, or "insufficient data" when its inputs were mostly
unknown, with its largest contributions in words. The model behind each number is in the
row's tooltip, not in a clinical column.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

from edge_twin.assess import FEATURE_WORDS
from edge_twin.domain import MMOL_TO_MGDL, SIGNALS, Signal

STYLE = """
body{font-family:system-ui,sans-serif;margin:1rem;color:#1d2430;background:#f7f8fa}
h1{font-size:1.3rem} h2{font-size:1.1rem;margin:1.4rem 0 .4rem}
table{border-collapse:collapse;background:#fff;width:100%;max-width:64rem}
th,td{padding:.35rem .6rem;border-bottom:1px solid #e3e6eb;text-align:left}
th{background:#eef1f5;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.stale,.live-off,.fresh,.live-on{padding:.05rem .4rem;border-radius:.3rem;font-size:.8rem}
.stale,.live-off{background:#fde2e1;color:#8a1c14} .fresh,.live-on{background:#e0f2e9;color:#14532d}
.high{background:#b42318;color:#fff;padding:.05rem .4rem;border-radius:.3rem}
.medium{background:#f79009;color:#1d2430;padding:.05rem .4rem;border-radius:.3rem}
.low{background:#fdeb9c;color:#1d2430;padding:.05rem .4rem;border-radius:.3rem}
.muted{color:#667085;font-size:.85rem} ul.alarms{margin:.2rem 0 .6rem;padding-left:1.2rem}
form.act{display:inline-flex;gap:.3rem;margin-left:.5rem} form.act input{width:12rem}
.banner{background:#fde2e1;border:2px solid #b42318;border-radius:.4rem;padding:.5rem 1rem}
@media (max-width:40rem){td.wide,th.wide{display:none}}
"""

# Acting on an alarm from the page (the session cookie goes with a same-origin fetch), and
# live updates: the server's event stream (/events) says when an alarm changed, readings
# came or the data stopped; the page then fetches itself and swaps its body, at once for
# an alarm, at most every data-refresh-s seconds for readings, never while someone types a
# reason (it catches up after). Every 60 s it refreshes anyway, in case the stream is down.
PAGE_SCRIPT = """
let live = false, pending = false, last = Date.now(), timer = null;
function typing() {
  const el = document.activeElement;
  return (el && el.matches('input,select,textarea'))
    || [...document.querySelectorAll('input[name=reason]')].some(i => i.value);
}
function showLive() {
  const el = document.getElementById('live');
  if (!el) return;
  el.textContent = live ? 'live' : 'reconnecting';
  el.className = live ? 'live-on' : 'live-off';
}
async function refresh() {
  if (typing()) { pending = true; return; }
  pending = false; last = Date.now();
  const r = await fetch(location.href, {headers: {Accept: 'text/html'}});
  if (r.status === 401) { location.assign('/login'); return; }
  if (!r.ok) return;
  const doc = new DOMParser().parseFromString(await r.text(), 'text/html');
  document.body.replaceWith(doc.body);
  showLive();
}
function soon() {
  if (timer) return;
  const gap = 1000 * Number(document.body.dataset.refreshS || 10);
  timer = setTimeout(() => { timer = null; refresh(); }, Math.max(0, last + gap - Date.now()));
}
// A hidden tab gives its stream back (a browser opens few connections to one host),
// and catches up when shown again.
let stream = null;
function listen() {
  if (!window.EventSource || stream) return;
  stream = new EventSource('/events');
  stream.addEventListener('alarm', refresh);
  stream.addEventListener('status', refresh);
  stream.addEventListener('readings', soon);
  stream.addEventListener('logout', () => location.assign('/login'));
  stream.onopen = () => { live = true; showLive(); };
  stream.onerror = () => { live = false; showLive(); };
}
document.addEventListener('visibilitychange', () => {
  if (document.hidden) { if (stream) { stream.close(); stream = null; live = false; } }
  else { listen(); refresh(); }
});
if (!document.hidden) listen();
setInterval(() => { if (pending || Date.now() - last > 60000) refresh(); }, 5000);
document.addEventListener('DOMContentLoaded', showLive);
async function act(form, what) {
  const reason = form.reason.value.trim();
  const out = form.querySelector('.result');
  if (!reason) { out.textContent = 'a reason is required'; form.reason.focus(); return; }
  const url = what === 'ack' ? `/alarms/${form.dataset.alarmId}/acknowledge`
    : `/patients/${form.dataset.patient}/alarms/${form.dataset.type}/pause`;
  const body = what === 'ack' ? {reason} : {reason, minutes: 30};
  const r = await fetch(url, {method: 'POST', headers: {'Content-Type': 'application/json'},
                              body: JSON.stringify(body)});
  if (r.ok) { form.reason.value = ''; form.reason.blur(); refresh(); return; }
  out.textContent = (await r.json()).detail;
}
document.addEventListener('click', (e) => {
  const b = e.target.closest('button[data-do]');
  if (b) act(b.form, b.dataset.do);
});
"""
LIVE_BADGE = '<span id="live" class="live-off" aria-live="polite">connecting</span>'

NAMES = {
    Signal.GLUCOSE: "Glucose",
    Signal.SYSTOLIC: "Systolic BP",
    Signal.DIASTOLIC: "Diastolic BP",
    Signal.HEART_RATE: "Heart rate",
    Signal.SPO2: "SpO\u2082",
    Signal.RESP_RATE: "Breathing rate",
    Signal.WEIGHT: "Weight",
    Signal.SKIN_TEMP: "Skin temperature",
    Signal.STEPS: "Steps",
}
UNITS = {"1/min": "/min", "Cel": "\u00b0C", "count": "steps"}
PRIORITY_ORDER = {"high": 0, "medium": 1, "low": 2, "info": 3}


@dataclass(frozen=True, slots=True)
class Display:
    """How a page shows things: the deployment's api.time_zone and api.glucose_unit, or
    the user's own choice (PUT /me/display)."""

    zone: ZoneInfo
    glucose_mmol: bool = False
    clock_24h: bool = True

    def when(self, iso: str, now: datetime) -> str:
        """A time in words people use: "today 07:40", "yesterday 22:10", "3 Dec 07:40"."""
        t = datetime.fromisoformat(iso).astimezone(self.zone)
        today = now.astimezone(self.zone).date()
        if t.date() == today:
            day = "today"
        elif t.date() == today - timedelta(days=1):
            day = "yesterday"
        else:
            day = f"{t.day} {t:%b}"
        return f"{day} {clock(t, self.clock_24h)}"

    def value(self, signal: Signal, v: float) -> float:
        return v / MMOL_TO_MGDL if signal is Signal.GLUCOSE and self.glucose_mmol else v

    def unit(self, signal: Signal) -> str:
        if signal is Signal.GLUCOSE and self.glucose_mmol:
            return "mmol/L"
        spec = SIGNALS[signal].unit
        return UNITS.get(spec, spec)

    def digits(self, signal: Signal) -> int:
        if signal is Signal.GLUCOSE:
            return 1 if self.glucose_mmol else 0
        return 1 if signal in (Signal.WEIGHT, Signal.SKIN_TEMP) else 0


def clock(t: datetime, clock_24h: bool = True) -> str:
    """07:40, or 7:40 AM on a 12-hour clock."""
    return f"{t:%H:%M}" if clock_24h else f"{t.hour % 12 or 12}:{t:%M %p}"


def ago(age_s: float) -> str:
    if age_s < 90:
        return "just now"
    if age_s < 90 * 60:
        return f"{age_s / 60:.0f} min ago"
    if age_s < 36 * 3600:
        return f"{age_s / 3600:.0f} h ago"
    return f"{age_s / 86400:.0f} days ago"


def _signal_row(s: dict[str, Any], show: Display, now: datetime) -> str:
    signal = Signal(s["signal"])
    spec = SIGNALS[signal]
    d = show.digits(signal)

    def shown(v: float) -> str:
        # Kept inside the signal's plausible range: no negative steps or weights.
        return f"{show.value(signal, min(max(v, spec.lo), spec.hi)):.{d}f}"

    lo, hi = s["interval95"]
    badge = '<span class="stale">STALE</span>' if s["stale"] else '<span class="fresh">fresh</span>'
    forecast = " / ".join(
        f"{shown(f['mean'])} [{shown(f['interval95'][0])}&ndash;{shown(f['interval95'][1])}]"
        for f in s["forecasts"]
        if f["horizon_min"] in (30.0, 60.0)
    )
    risk = next((r for r in s.get("risks", []) if r["kind"] == "low"), None)
    risk_text = "&ndash;" if risk is None else f"{100 * risk['probability']:.0f}%"
    prov = s["provenance"]
    model = (
        f"{prov['model']} v{prov['model_version']} from {prov['n_measurements']} readings"
        f" of {', '.join(prov['device_ids'])}"
    )
    last = f"{show.when(s['last_measured_at'], now)} ({ago(s['age_s'])})"
    return (
        f'<tr data-signal="{escape(s["signal"])}" title="{escape(model)}">'
        f"<td>{escape(NAMES.get(signal, signal.value))}</td>"
        f"<td class=num>{shown(s['mean'])} {escape(show.unit(signal))}</td>"
        f"<td class=num>{shown(lo)}&ndash;{shown(hi)}</td>"
        f"<td>{escape(last)} {badge}</td>"
        f"<td class=wide>{forecast or '&ndash;'}</td>"
        f"<td class=num>{risk_text}</td></tr>"
    )


def _risk_line(risk: dict[str, Any] | None, show: Display, now: datetime) -> str:
    if risk is None:
        return ""
    prov = risk["provenance"]
    model = f"model {prov['model']} {prov['version']}"
    when = show.when(risk["at"], now)
    if risk["confidence"] == "low":
        # Most of its inputs were unknown: a number would look like knowledge it is not.
        return (
            f'<p data-risk="hf_decompensation">Decompensation risk: <b>insufficient data</b>'
            f" ({when}) <span class=muted>{escape('; '.join(risk['confidence_reasons']))};"
            f" {escape(model)}</span></p>"
        )
    flag = '<span class="stale">ABOVE THRESHOLD</span> ' if risk["above_threshold"] else ""
    why = "; ".join(
        f"{escape(FEATURE_WORDS.get(c['feature'], c['feature']))} {c['value']:.1f}"
        f" (usually {c['typical']:.1f})"
        for c in risk["top_contributions"]
    )
    return (
        f'<p data-risk="hf_decompensation">{flag}Decompensation risk within'
        f" {risk['horizon_days']:g} days: <b>{100 * risk['probability']:.0f}%</b>"
        f" (alert at {100 * risk['threshold']:.0f}%, confidence {escape(risk['confidence'])},"
        f" {when})<br><span class=muted>driven by: {why or '&ndash;'}; {escape(model)}</span></p>"
    )


def _alarm_item(a: dict[str, Any], show: Display, now: datetime, can_pause: bool) -> str:
    """An open alarm in words, and what the care team can do: acknowledge it, or pause
    it for 30 min (the engine's bounds apply), with a reason (kept in the audit log)."""
    kind = escape(a["type"])
    form = (
        f'<form class="act" data-alarm-id="{int(a["alarm_id"])}"'
        f' data-patient="{escape(a["patient_id"])}" data-type="{kind}">'
        '<input name="reason" placeholder="reason (required)" aria-label="reason">'
        '<button type="button" data-do="ack">Acknowledge</button>'
        + ('<button type="button" data-do="pause">Pause 30 min</button>' if can_pause else "")
        + '<span class="result muted"></span></form>'
    )
    return (
        f'<li data-alarm="{kind}" data-state="{escape(a["state"])}">'
        f'<span class="{escape(a["priority"])}">{escape(a["priority"])}</span>'
        f" {escape(a['type'].replace('_', ' '))}: {escape(a['reason'])}"
        f" <span class=muted>since {show.when(a['raised_at'], now)}, {escape(a['state'])}"
        f"{', by ' + escape(a['acknowledged_by']) if a.get('acknowledged_by') else ''}"
        f"</span>{form}</li>"
    )


def alarm_list(
    open_alarms: list[dict[str, Any]], show: Display, now: datetime, can_pause: bool = True
) -> str:
    """``can_pause``: the user's role may pause (a care team); a patient only acknowledges."""
    if not open_alarms:
        return ""
    ordered = sorted(open_alarms, key=lambda a: PRIORITY_ORDER.get(a["priority"], 9))
    items = "".join(_alarm_item(a, show, now, can_pause) for a in ordered)
    return f'<ul class="alarms">{items}</ul>'


def banner(problems: list[str]) -> str:
    if not problems:
        return ""
    items = "".join(f"<li>{escape(p)}</li>" for p in problems)
    return f'<div class="banner" role="alert"><b>Data may not be current</b><ul>{items}</ul></div>'


def triage_key(p: dict[str, Any], open_alarms: list[dict[str, Any]]) -> tuple[Any, ...]:
    """Most urgent first: open alarms by priority, then the decompensation risk."""
    counts = [sum(1 for a in open_alarms if a["priority"] == k) for k in ("high", "medium", "low")]
    risk = p.get("risk")
    probability = 0.0 if risk is None or risk["confidence"] == "low" else risk["probability"]
    return (-counts[0], -counts[1], -counts[2], -probability, p["patient_id"])


def render(
    gateway_id: str,
    now_iso: str,
    patients: list[dict[str, Any]],
    open_alarms: dict[str, list[dict[str, Any]]] | None = None,
    show: Display | None = None,
    problems: list[str] | None = None,
) -> str:
    """``problems``: what keeps data from arriving (ingest disconnected, nothing received
    for a while), shown above everything: the page is only as current as its data."""
    show = show or Display(ZoneInfo("UTC"))
    alarms_of = open_alarms or {}
    now = datetime.fromisoformat(now_iso)
    ordered = sorted(patients, key=lambda p: triage_key(p, alarms_of.get(p["patient_id"], [])))
    sections = []
    for p in ordered:
        rows = "".join(_signal_row(s, show, now) for s in p["signals"].values())
        if not rows:
            rows = "<tr><td colspan=6 class=muted>no readings yet</td></tr>"
        pid = escape(p["patient_id"])
        sections.append(
            f'<section data-patient="{pid}">'
            f'<h2><a href="/patients/{pid}/view">Patient {pid}</a></h2>'
            f"{alarm_list(alarms_of.get(p['patient_id'], []), show, now)}"
            f"{_risk_line(p.get('risk'), show, now)}"
            "<table><thead><tr><th>signal</th><th>estimate</th><th>95% interval</th>"
            "<th>last measured</th><th class=wide>forecast 30 / 60 min</th>"
            "<th>low within 30 min</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></section>"
        )
    body = "".join(sections) or "<p class=muted>No patients provisioned yet.</p>"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>edge-twin {escape(gateway_id)}</title><style>{STYLE}</style>"
        f"<script>{PAGE_SCRIPT}</script></head><body data-refresh-s=10>"
        f"<h1>edge-twin gateway {escape(gateway_id)}</h1>{banner(problems or [])}"
        f"<p class=muted>{LIVE_BADGE} as of {show.when(now_iso, now)} ({escape(str(show.zone))})"
        " &middot; "
        '<a href="/settings">settings</a> &middot; <a href="/docs">API</a></p>'
        f"{body}</body></html>"
    )
