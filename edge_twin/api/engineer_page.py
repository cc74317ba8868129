"""The field engineer's page (/engineer): is this gateway doing its job, and if not,
where does it stop? No clinical values: devices by id and type, the patient they are bound
to by id, what they last said about themselves, the open technical alarms, the log
consumers' backlogs, ingest's connection, sync's counts, disk, and the quarantine by
reason with its latest entries' metadata.
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any

from edge_twin.alert import CATALOG
from edge_twin.api.dashboard import STYLE, Display, ago, banner

# Technical alarms whose reason names devices and counts only; the others' reasons may
# quote clinical figures (a forecast's error in mg/dL): their type's description instead.
SAYS_NO_VALUE = frozenset(
    {
        "device_offline",
        "battery_low",
        "sensor_session_ending",
        "upstream_sync_failing",
        "gateway_storage",
        "alarm_delivery_failing",
        "device_flooding",
        "gateway_internal_error",
        "gateway_broker_unreachable",
    }
)


def _cell(v: Any) -> str:
    return "&ndash;" if v is None or v == "" else escape(str(v))


def _when(iso: str | None, show: Display, now: datetime) -> str:
    if iso is None:
        return "never"
    age = (now - datetime.fromisoformat(iso)).total_seconds()
    return f"{show.when(iso, now)} ({ago(max(age, 0.0))})"


def _broker(ingest: dict[str, Any] | None) -> str:
    if ingest is None:
        return "not watched here (the API alone: edge-twin serve)"
    if ingest.get("connected"):
        return "connected"
    return f"<b>not connected</b>: {_cell(ingest.get('last_error') or 'no answer yet')}"


def _table(head: list[str], rows: list[list[str]], empty: str, attr: str = "") -> str:
    if not rows:
        return f"<p class=muted>{escape(empty)}</p>"
    th = "".join(f"<th>{escape(h)}</th>" for h in head) if any(head) else ""
    body = "".join(f"<tr {attr}>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    thead = f"<thead><tr>{th}</tr></thead>" if th else ""
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def render(
    health: dict[str, Any],
    devices: list[dict[str, Any]],
    technical: list[dict[str, Any]],
    quarantined: list[dict[str, Any]],
    show: Display,
) -> str:
    now = datetime.fromisoformat(health["now"])
    status = health["status"]
    disk = health.get("disk") or {}
    facts = [
        ["status", f'<b data-status="{escape(status)}">{escape(status)}</b>'],
        ["version", _cell(health["version"])],
        ["schema", _cell(health["schema"][-1] if health["schema"] else None)],
        ["broker", _broker(health.get("ingest"))],
        ["readings stored", _cell(health["readings"])],
        [
            "disk free",
            _cell(
                f"{disk['free_bytes'] / 1e9:.1f} GB; store {disk['store_bytes'] / 1e6:.1f} MB"
                if disk
                else None
            ),
        ],
    ]
    device_rows = [
        [
            f'<span data-device="{escape(d["device_id"])}">{escape(d["device_id"])}</span>',
            escape(d["device_type"]),
            escape(d["patient_id"]),
            _when(d.get("last_seen_at"), show, now),
            {True: "online", False: "offline", None: "&ndash;"}[d["online"]],
            _cell(None if d["battery_pct"] is None else f"{d['battery_pct']:.0f}%"),
            _cell(d["firmware"]),
            _cell(None if d["clock_offset_s"] is None else f"{d['clock_offset_s']:+.0f} s"),
        ]
        for d in devices
    ]
    alarm_rows = [
        [
            f'<span class="{escape(a["priority"])}">{escape(a["priority"])}</span>',
            escape(a["type"].replace("_", " ")),
            escape(a["patient_id"]),
            escape(a["reason"] if a["type"] in SAYS_NO_VALUE else CATALOG[a["type"]].description),
            _when(a["raised_at"], show, now),
            escape(a["state"]),
        ]
        for a in technical
    ]
    consumer_rows = [
        [
            escape(c["name"]),
            escape(c["log"]),
            _cell(c["backlog"]),
            _when(c["behind_since"], show, now) if c["behind_since"] else "up to date",
            _cell(c["failures"]),
            _cell(c["last_error"]),
        ]
        for c in health["consumers"]
    ]
    by_reason = [[escape(k), str(v)] for k, v in sorted(health["quarantined"].items())]
    recent = [
        [
            _when(q["received_at"], show, now),
            escape(q["reason"]),
            _cell(q["device_id"]),
            escape(q["topic"]),
            f"{q['payload_size']} B",
        ]
        for q in quarantined
    ]
    sync = health.get("sync")
    sync_text = (
        "<p class=muted>FHIR sync is off (sync.url not set).</p>"
        if sync is None
        else _table(["", ""], [[escape(k), _cell(v)] for k, v in sync.items()], "")
    )
    gateway = escape(health["gateway_id"])
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>edge-twin {gateway}: engineer</title><style>{STYLE}</style></head>"
        f"<body><h1>Gateway {gateway}</h1>{banner(health['problems'])}"
        f"<p class=muted>as of {show.when(health['now'], now)} ({escape(str(show.zone))})"
        " &middot;"
        ' <a href="/health">/health</a> &middot; <a href="/settings">settings</a> &middot;'
        ' <a href="/docs">API</a></p>'
        f"<section data-section=gateway><h2>Gateway</h2>{_table(['', ''], facts, '')}</section>"
        "<section data-section=technical-alarms><h2>Open technical alarms</h2>"
        f"{_table(['priority', 'alarm', 'patient', 'why', 'since', 'state'], alarm_rows, 'None.')}"
        "</section><section data-section=devices><h2>Devices</h2>"
        + _table(
            ["device", "type", "patient", "last reading", "state", "battery", "firmware", "clock"],
            device_rows,
            "No device provisioned.",
        )
        + "</section><section data-section=consumers><h2>Who reads the logs</h2>"
        + _table(
            ["consumer", "log", "backlog", "behind since", "failures", "last error"],
            consumer_rows,
            "No consumer yet.",
        )
        + f"</section><section data-section=sync><h2>Upstream sync</h2>{sync_text}</section>"
        "<section data-section=quarantine><h2>Quarantine</h2>"
        + _table(["reason", "messages or records"], by_reason, "Nothing quarantined.")
        + "<h3>Latest</h3>"
        + _table(["received", "reason", "device", "topic", "size"], recent, "Nothing.")
        + "</section></body></html>"
    )
