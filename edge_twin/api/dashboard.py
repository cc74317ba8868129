"""The care-team dashboard: one server-rendered page, no JavaScript framework.

Shows each patient's twin: every signal's estimate with its 95% interval, trend, age, a
STALE badge when the signal may not be acted on, the 30/60-min glucose forecast and the
probability of a low; the latest heart-failure decompensation risk with its confidence,
top contributing features and model version. Refreshes itself every 15 s.
"""

from __future__ import annotations

from html import escape
from typing import Any

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d2430;background:#f7f8fa}
h1{font-size:1.3rem} h2{font-size:1.1rem;margin:1.2rem 0 .4rem}
table{border-collapse:collapse;background:#fff;min-width:52rem}
th,td{padding:.35rem .7rem;border-bottom:1px solid #e3e6eb;text-align:left}
th{background:#eef1f5;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.stale{background:#fde2e1;color:#8a1c14;padding:.05rem .4rem;border-radius:.3rem;font-size:.8rem}
.fresh{background:#e0f2e9;color:#14532d;padding:.05rem .4rem;border-radius:.3rem;font-size:.8rem}
.muted{color:#667085;font-size:.85rem}
"""


def _fmt(value: float | None, digits: int = 1) -> str:
    return "&ndash;" if value is None else f"{value:.{digits}f}"


def _signal_row(s: dict[str, Any]) -> str:
    lo, hi = s["interval95"]
    badge = '<span class="stale">STALE</span>' if s["stale"] else '<span class="fresh">live</span>'
    rate = s.get("rate_per_min")
    forecast = " / ".join(
        f"{f['mean']:.0f} [{f['interval95'][0]:.0f}, {f['interval95'][1]:.0f}]"
        for f in s["forecasts"]
        if f["horizon_min"] in (30.0, 60.0)
    )
    risk = next((r for r in s.get("risks", []) if r["kind"] == "low"), None)
    prov = s["provenance"]
    risk_text = "&ndash;" if risk is None else f"{100 * risk['probability']:.1f}%"
    return (
        f'<tr data-signal="{escape(s["signal"])}"><td>{escape(s["signal"])}</td>'
        f"<td class=num>{_fmt(s['mean'])} {escape(s['unit'])}</td>"
        f"<td class=num>[{_fmt(lo)}, {_fmt(hi)}]</td>"
        f"<td class=num>{_fmt(rate, 2)}</td>"
        f"<td class=num>{_fmt(s['age_s'] / 60.0)} min</td><td>{badge}</td>"
        f"<td>{escape(forecast) or '&ndash;'}</td>"
        f"<td class=num>{risk_text}</td>"
        f"<td class=muted>{escape(prov['model'])} v{escape(prov['model_version'])},"
        f" n={prov['n_measurements']}</td></tr>"
    )


def _risk_line(risk: dict[str, Any] | None) -> str:
    if risk is None:
        return ""
    flag = '<span class="stale">ABOVE THRESHOLD</span> ' if risk["above_threshold"] else ""
    why = ", ".join(
        f"{escape(c['feature'])} {c['value']:.2f} (usual {c['typical']:.2f})"
        for c in risk["top_contributions"]
    )
    prov = risk["provenance"]
    return (
        f'<p data-risk="hf_decompensation">{flag}Decompensation risk within'
        f" {risk['horizon_days']:g} days: <b>{100 * risk['probability']:.1f}%</b>"
        f" (threshold {100 * risk['threshold']:.1f}%, confidence {escape(risk['confidence'])})"
        f" at {escape(risk['at'])}<br><span class=muted>driven by: {why or '&ndash;'};"
        f" model {escape(prov['model'])} {escape(prov['version'])}</span></p>"
    )


def render(gateway_id: str, now_iso: str, patients: list[dict[str, Any]]) -> str:
    sections = []
    for p in patients:
        rows = "".join(_signal_row(s) for s in p["signals"].values())
        if not rows:
            rows = "<tr><td colspan=9 class=muted>no readings yet</td></tr>"
        pid = escape(p["patient_id"])
        sections.append(
            f'<section data-patient="{pid}"><h2>Patient {pid}</h2>{_risk_line(p.get("risk"))}'
            "<table><thead><tr><th>signal</th><th>estimate</th><th>95% interval</th>"
            "<th>trend /min</th><th>last reading</th><th>status</th>"
            "<th>forecast 30 / 60 min</th><th>P(&lt;70 in 30 min)</th><th>model</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></section>"
        )
    body = "".join(sections) or "<p class=muted>No patients provisioned yet.</p>"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta http-equiv="refresh" content="15">'
        f"<title>edge-twin {escape(gateway_id)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>edge-twin gateway {escape(gateway_id)}</h1>"
        f"<p class=muted>as of {escape(now_iso)} &middot; "
        '<a href="/docs">API</a> &middot; <a href="/health">health</a> &middot; '
        '<a href="/quarantine">quarantine</a></p>'
        f"{body}</body></html>"
    )
