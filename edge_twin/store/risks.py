"""Risk assessments the gateway computed, with everything they were computed from."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from edge_twin.domain import Contribution, DecompensationRisk, ModelProvenance
from edge_twin.store.database import Store

KIND = "hf_decompensation"


def insert(conn: sqlite3.Connection, risk: DecompensationRisk, computed_at: float) -> int:
    details = {
        "horizon_days": risk.horizon_days,
        "threshold": risk.threshold,
        "confidence_reasons": list(risk.confidence_reasons),
        "contributions": [asdict(c) for c in risk.contributions],
        "features": dict(risk.features),
        "window": [risk.provenance.window_start, risk.provenance.window_end],
        "inputs": list(risk.provenance.inputs),
    }
    cur = conn.execute(
        "INSERT INTO risk_assessments (patient_id, t, kind, probability, confidence, model,"
        " model_version, model_sha256, details, computed_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            risk.patient_id,
            risk.t,
            KIND,
            risk.probability,
            risk.confidence,
            risk.provenance.model,
            risk.provenance.version,
            risk.provenance.sha256,
            json.dumps(details),
            computed_at,
        ),
    )
    return int(cur.lastrowid or 0)


def latest(store: Store, patient_id: str, limit: int = 1) -> list[DecompensationRisk]:
    """Newest first (by event time)."""
    rows = store.conn.execute(
        "SELECT patient_id, t, probability, confidence, model, model_version, model_sha256,"
        " details FROM risk_assessments WHERE patient_id = ? AND kind = ?"
        " ORDER BY t DESC, id DESC LIMIT ?",
        (patient_id, KIND, limit),
    )
    return _risks(rows)


def between(
    store: Store, since: float, until: float, patient_id: str | None = None
) -> list[DecompensationRisk]:
    """Every assessment with event time in [since, until), oldest first."""
    where = "kind = ? AND t >= ? AND t < ?"
    args: list[object] = [KIND, since, until]
    if patient_id is not None:
        where += " AND patient_id = ?"
        args.append(patient_id)
    rows = store.conn.execute(
        "SELECT patient_id, t, probability, confidence, model, model_version, model_sha256,"
        f" details FROM risk_assessments WHERE {where} ORDER BY t, id",
        args,
    )
    return _risks(rows)


@dataclass(frozen=True, slots=True)
class RiskPoint:
    """An assessment as a plot draws it."""

    t: float
    probability: float
    threshold: float
    confidence: str


def series(store: Store, patient_id: str, since: float, until: float) -> list[RiskPoint]:
    """The patient's assessments with event time in [since, until), oldest first, without
    their details (SQLite reads the threshold out of the JSON: no parse of each row's
    features and contributions)."""
    rows = store.conn.execute(
        "SELECT t, probability, json_extract(details, '$.threshold'), confidence"
        " FROM risk_assessments WHERE patient_id = ? AND kind = ? AND t >= ? AND t < ?"
        " ORDER BY t, id",
        (patient_id, KIND, since, until),
    )
    return [RiskPoint(float(t), float(p), float(th), str(c)) for t, p, th, c in rows]


def after(
    conn: sqlite3.Connection, after_id: int, limit: int
) -> list[tuple[int, float, DecompensationRisk]]:
    """Assessments with id > ``after_id`` in commit order (a log): id, when computed
    (gateway time), the assessment."""
    rows = conn.execute(
        "SELECT id, computed_at, patient_id, t, probability, confidence, model, model_version,"
        " model_sha256, details FROM risk_assessments WHERE id > ? AND kind = ?"
        " ORDER BY id LIMIT ?",
        (after_id, KIND, limit),
    ).fetchall()
    assessed = _risks(r[2:] for r in rows)
    return [(int(r[0]), float(r[1]), a) for r, a in zip(rows, assessed, strict=True)]


def _risks(rows: Iterable[tuple[Any, ...]]) -> list[DecompensationRisk]:
    out = []
    for patient, t, p, confidence, model, version, sha, details_json in rows:
        d = json.loads(details_json)
        out.append(
            DecompensationRisk(
                patient_id=patient,
                t=t,
                horizon_days=d["horizon_days"],
                probability=p,
                threshold=d["threshold"],
                confidence=confidence,
                confidence_reasons=tuple(d["confidence_reasons"]),
                contributions=tuple(Contribution(**c) for c in d["contributions"]),
                features=tuple(d["features"].items()),
                provenance=ModelProvenance(
                    model, version, sha, d["window"][0], d["window"][1], tuple(d["inputs"])
                ),
            )
        )
    return out


def recent_features(store: Store, limit: int) -> list[dict[str, float | None]]:
    """The feature rows of the newest ``limit`` assessments (all patients): drift input."""
    rows = store.conn.execute(
        "SELECT details FROM risk_assessments WHERE kind = ? ORDER BY id DESC LIMIT ?",
        (KIND, limit),
    )
    return [json.loads(r[0])["features"] for r in rows]
