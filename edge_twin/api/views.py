"""What a reader sees of a patient, as the API, the dashboard and the CLI show it: each
signal's estimate, with the glucose threshold risks assessed at the patient's own alarm
thresholds (alarm settings), and the latest decompensation risk."""

from __future__ import annotations

from typing import Any

from edge_twin.alert import AlarmEngine
from edge_twin.api.serialize import estimate_json, risk_json
from edge_twin.assess import threshold_risks
from edge_twin.clock import to_iso
from edge_twin.config import Config
from edge_twin.domain import Signal
from edge_twin.estimate import patient_estimates
from edge_twin.store import Store, risks


def patient_state(store: Store, patient_id: str, now: float, config: Config) -> dict[str, Any]:
    settings = AlarmEngine(store, lambda: now).settings(patient_id)
    stale_after = config.estimate.stale_after_s
    latest_risk = risks.latest(store, patient_id)
    signals = {}
    for e in patient_estimates(store, patient_id, now):
        assessed = (
            threshold_risks(e, settings.low_mgdl, settings.urgent_low_mgdl)
            if e.signal is Signal.GLUCOSE
            else []
        )
        signals[e.signal.value] = estimate_json(e, now, stale_after, assessed)
    return {
        "patient_id": patient_id,
        "as_of": to_iso(now),
        "signals": signals,
        "risk": risk_json(latest_risk[0]) if latest_risk else None,
    }
