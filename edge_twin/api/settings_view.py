"""A user's own display settings (/settings): glucose unit, time zone, 24-hour clock,
each either theirs or the deployment's (api.glucose_unit, api.time_zone)."""

from __future__ import annotations

from html import escape

from edge_twin.api.dashboard import STYLE, Display
from edge_twin.domain import Role
from edge_twin.store.users import DisplayChoice, User

HOME = {Role.CARE_TEAM: "/", Role.PATIENT: "/patient", Role.ENGINEER: "/engineer"}

SCRIPT = """
document.addEventListener('submit', async (e) => {
  e.preventDefault();
  const f = e.target, pick = (v) => v === '' ? null : v;
  const clock = pick(f.clock_24h.value);
  const body = {glucose_unit: pick(f.glucose_unit.value), time_zone: pick(f.time_zone.value.trim()),
                clock_24h: clock === null ? null : clock === 'true'};
  const r = await fetch('/me/display', {method: 'PUT',
    headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)});
  f.querySelector('.result').textContent = r.ok ? 'saved' : (await r.json()).detail;
});
"""


def _options(chosen: str | None, values: list[tuple[str, str]]) -> str:
    return "".join(
        f'<option value="{escape(v)}"{" selected" if (chosen or "") == v else ""}>'
        f"{escape(label)}</option>"
        for v, label in values
    )


def render(user: User, own: DisplayChoice, deployment: Display) -> str:
    unit = "mmol/L" if deployment.glucose_mmol else "mg/dL"
    clock = None if own.clock_24h is None else str(own.clock_24h).lower()
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Display settings</title><style>{STYLE}</style><script>{SCRIPT}</script>"
        f'</head><body><p><a href="{HOME[user.role]}">&larr; back</a></p>'
        f"<h1>Display settings of {escape(user.username)}</h1>"
        '<form class="settings"><table><tbody>'
        '<tr><td><label for="glucose_unit">Glucose in</label></td><td>'
        '<select id="glucose_unit" name="glucose_unit">'
        + _options(
            own.glucose_unit,
            [("", f"the gateway's ({unit})"), ("mg/dL", "mg/dL"), ("mmol/L", "mmol/L")],
        )
        + "</select></td></tr>"
        '<tr><td><label for="time_zone">Time zone</label></td><td>'
        f'<input id="time_zone" name="time_zone" value="{escape(own.time_zone or "")}"'
        f' placeholder="the gateway\'s ({escape(str(deployment.zone))})"></td></tr>'
        '<tr><td><label for="clock_24h">Clock</label></td><td>'
        '<select id="clock_24h" name="clock_24h">'
        + _options(clock, [("", "the gateway's"), ("true", "24-hour"), ("false", "12-hour")])
        + "</select></td></tr></tbody></table>"
        '<button type="submit">Save</button> <span class="result muted"></span></form>'
        "</body></html>"
    )
