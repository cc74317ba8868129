"""The patient's own page, for a tablet or a TV on the home LAN: readable at arm's length,
usable by touch. Glucose now in large type with a trend arrow and when it was measured;
the latest blood pressure and weight; the patient's alarms in plain words with what to do
next and a button to acknowledge; each device's last sign of life and battery.
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any

from edge_twin.api.dashboard import LIVE_BADGE, PAGE_SCRIPT, Display
from edge_twin.domain import Signal

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1rem;color:#1d2430;background:#fff;font-size:1.4rem}
.big{font-size:4.5rem;font-weight:700;line-height:1.1} .arrow{font-size:3.5rem}
.muted{color:#475467;font-size:1.1rem} section{margin:1.2rem 0}
.alarm{border:3px solid #b42318;border-radius:.6rem;padding:.8rem;margin:.6rem 0}
.alarm.medium{border-color:#f79009} .alarm.low{border-color:#fdb022}
button{font-size:1.3rem;padding:.6rem 1.2rem;margin:.3rem .3rem 0 0} input{font-size:1.2rem}
table{border-collapse:collapse} td{padding:.3rem .8rem .3rem 0}
.live-on,.live-off{padding:.05rem .4rem;border-radius:.3rem;font-size:.9rem}
.live-on{background:#e0f2e9;color:#14532d} .live-off{background:#fde2e1;color:#8a1c14}
"""

# What to do, in plain words, when an alarm is on (what the patient agreed with their care
# team comes first; these are the generic first steps).
NEXT_STEP = {
    "urgent_low": "Take 15-20 g of fast sugar now (juice, glucose tablets). Check again in"
    " 15 minutes. If you cannot, someone should call for help.",
    "low": "Take 15 g of fast sugar. Check again in 15 minutes.",
    "predicted_low": "Your glucose may go low soon: have a snack or follow your plan.",
    "high": "Follow your plan for high glucose; drink water. Tell your care team if it stays.",
    "bp_high_sustained": "Sit and rest 5 minutes, then measure again. Your care team is told.",
    "decompensation_risk": "Your care team has been told. Weigh yourself each morning; call"
    " them if you are short of breath or your ankles swell.",
    "signal_stale": "The glucose sensor is not heard: keep your phone or the gateway near,"
    " check the sensor is on.",
    "device_offline": "A device is off or out of reach: check it is on and nearby.",
    "battery_low": "A device's battery is low: charge it or change its battery.",
    "sensor_session_ending": "Your glucose sensor ends soon: have a new one ready.",
}


def arrow(rate_mgdl_per_min: float | None) -> str:
    """The CGM convention: how fast glucose moves (mg/dL a minute)."""
    if rate_mgdl_per_min is None:
        return ""
    steps = ((3, "\u21c8"), (2, "\u2191"), (1, "\u2197"), (-1, "\u2192"), (-2, "\u2198"))
    for bound, mark in steps:
        if rate_mgdl_per_min >= bound:
            return mark
    return "\u2193" if rate_mgdl_per_min >= -3 else "\u21ca"


def _glucose(s: dict[str, Any] | None, show: Display, now: datetime) -> str:
    if s is None:
        return "<section><p>No glucose readings yet.</p></section>"
    value = show.value(Signal.GLUCOSE, s["mean"])
    stale = " <b>(not current: the sensor is not heard)</b>" if s["stale"] else ""
    digits = show.digits(Signal.GLUCOSE)
    return (
        f'<section data-signal="glucose"><span class="big">{value:.{digits}f}</span>'
        f' <span class="arrow">{arrow(s.get("rate_per_min"))}</span>'
        f" {escape(show.unit(Signal.GLUCOSE))}<br><span class=muted>glucose,"
        f" measured {show.when(s['last_measured_at'], now)}{stale}</span></section>"
    )


def _latest(signals: dict[str, Any], show: Display, now: datetime) -> str:
    rows = []
    sys_, dia = signals.get("systolic"), signals.get("diastolic")
    if sys_ and dia:
        rows.append(
            f"<tr><td>Blood pressure</td><td><b>{sys_['mean']:.0f}/{dia['mean']:.0f}</b> mmHg</td>"
            f"<td class=muted>{show.when(sys_['last_measured_at'], now)}</td></tr>"
        )
    weight = signals.get("weight")
    if weight:
        rows.append(
            f"<tr><td>Weight</td><td><b>{weight['mean']:.1f}</b> kg</td>"
            f"<td class=muted>{show.when(weight['last_measured_at'], now)}</td></tr>"
        )
    return f"<section><table>{''.join(rows)}</table></section>" if rows else ""


def _alarm(a: dict[str, Any], show: Display, now: datetime) -> str:
    kind = a["type"]
    step = NEXT_STEP.get(kind, "Your care team has been told.")
    acknowledged = a["state"] == "acknowledged"
    button = (
        ""
        if acknowledged
        else (
            f'<form class="act" data-alarm-id="{int(a["alarm_id"])}"'
            f' data-patient="{escape(a["patient_id"])}" data-type="{escape(kind)}">'
            '<input name="reason" value="seen by the patient" aria-label="note">'
            '<button type="button" data-do="ack">I have seen this</button>'
            '<span class="result muted"></span></form>'
        )
    )
    return (
        f'<div class="alarm {escape(a["priority"])}" data-alarm="{escape(kind)}"'
        f' data-state="{escape(a["state"])}"><b>{escape(kind.replace("_", " ").capitalize())}'
        f"</b>: {escape(a['reason'])}<br>{escape(step)}<br><span class=muted>since"
        f" {show.when(a['raised_at'], now)}{', seen' if acknowledged else ''}</span>{button}</div>"
    )


def _devices(devices: list[dict[str, Any]], show: Display, now: datetime) -> str:
    rows = []
    for d in devices:
        seen = d.get("last_seen_at")
        battery = d.get("battery_pct")
        rows.append(
            f'<tr data-device="{escape(d["device_id"])}"><td>{escape(d["device_type"])}</td>'
            f"<td>{'last heard ' + show.when(seen, now) if seen else 'not heard yet'}</td>"
            f"<td>{'' if battery is None else f'battery {battery:g}%'}</td></tr>"
        )
    return f"<section><table>{''.join(rows)}</table></section>" if rows else ""


def render(
    patient_id: str,
    now_iso: str,
    state: dict[str, Any],
    open_alarms: list[dict[str, Any]],
    devices: list[dict[str, Any]],
    show: Display,
) -> str:
    now = datetime.fromisoformat(now_iso)
    signals = state["signals"]
    alarms = "".join(_alarm(a, show, now) for a in open_alarms)
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>My readings</title><style>{_STYLE}</style><script>{PAGE_SCRIPT}</script></head>"
        f'<body data-patient="{escape(patient_id)}" data-refresh-s=30>{alarms}'
        f"{_glucose(signals.get('glucose'), show, now)}{_latest(signals, show, now)}"
        f"{_devices(devices, show, now)}"
        f"<p class=muted>{LIVE_BADGE} as of {show.when(now_iso, now)} &middot;"
        f' <a href="/patients/{escape(patient_id)}/view">my readings over time</a> &middot;'
        ' <a href="/settings">settings</a></p>'
        "</body></html>"
    )
