"""``edge-twin export``: what the gateway said, as JSON lines, for anyone to score.

    store -> forecasts issued (with the reading that came), alarm audit events, risk
             assessments, in [since, until) of event time -> one JSON object per line

Each line has ``kind`` (``forecast``, ``alarm_event``, ``risk``), ``patient_id``, the
event time as ``t`` (epoch seconds) and ``at`` (ISO 8601 UTC), and the values with their
uncertainty and provenance: a recording replayed through a gateway (``edge-twin replay``)
can be exported and scored with anyone's own tools against their own truth.
Lines are ordered by kind, then by time. Nothing is written to the store (opening it
applies any pending schema migration, as every command does).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from typing import Any, TextIO

from edge_twin.api import risk_json
from edge_twin.clock import to_iso
from edge_twin.store import Store, alarms, forecasts, risks

KINDS = ("forecast", "alarm_event", "risk")
Z95 = 1.959963984540054


def _forecasts(
    store: Store, since: float, until: float, pid: str | None
) -> Iterator[dict[str, Any]]:
    for row in forecasts.export_rows(store, since, until, pid):
        mean, sd = float(row["mean"]), float(row["sd"])
        yield {
            "kind": "forecast",
            "patient_id": row["patient_id"],
            "signal": row["signal"],
            "t": row["issued_at"],
            "at": to_iso(float(row["issued_at"])),
            "horizon_min": round(float(row["horizon_s"]) / 60.0, 3),
            "target_t": row["target_t"],
            "target_at": to_iso(float(row["target_t"])),
            "mean": mean,
            "sd": sd,
            "interval95": [mean - Z95 * sd, mean + Z95 * sd],
            "reading_mean": row["reading_mean"],
            "reading_sd": row["reading_sd"],
            "model": row["model"],
            "model_version": row["model_version"],
            "observed": row["observed"],
            "observed_t": row["observed_t"],
        }


def _alarm_events(
    store: Store, since: float, until: float, pid: str | None
) -> Iterator[dict[str, Any]]:
    for row in alarms.export_rows(store.conn, since, until, pid):
        t = float(row.pop("at"))
        yield {
            "kind": "alarm_event",
            "patient_id": row.pop("patient_id"),
            "t": t,
            "at": to_iso(t),
            **row,
            "recorded_at": to_iso(float(row["recorded_at"])),
        }


def _risks(store: Store, since: float, until: float, pid: str | None) -> Iterator[dict[str, Any]]:
    for r in risks.between(store, since, until, pid):
        doc = risk_json(r)
        yield {
            "kind": "risk",
            "patient_id": r.patient_id,
            "t": r.t,
            "risk_kind": doc.pop("kind"),
            **doc,
        }


def export(
    store: Store,
    out: TextIO,
    since: float,
    until: float,
    patient_id: str | None = None,
    kinds: tuple[str, ...] = KINDS,
) -> Counter[str]:
    """Write the chosen kinds as JSON lines to ``out``; how many lines of each kind."""
    sources = {"forecast": _forecasts, "alarm_event": _alarm_events, "risk": _risks}
    written: Counter[str] = Counter()
    for kind in kinds:
        for doc in sources[kind](store, since, until, patient_id):
            out.write(json.dumps(_json_safe(doc), separators=(",", ":"), allow_nan=False))
            out.write("\n")
            written[kind] += 1
    return written


def _json_safe(value: Any) -> Any:
    """NaN and infinities become null: JSON has no such numbers, and a reader's parser
    would refuse the line."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
