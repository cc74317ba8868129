"""Beside the pipeline: the local FastAPI service and the care-team dashboard.

``serialize`` turns domain types into the API's JSON (the CLI and export print the same).
"""

from edge_twin.api.app import create_app
from edge_twin.api.serialize import (
    audit_json,
    device_json,
    drift_json,
    estimate_json,
    quarantine_json,
    reading_json,
    risk_json,
)
from edge_twin.api.server import ApiServer, tls_of
from edge_twin.api.views import patient_state

__all__ = [
    "ApiServer",
    "audit_json",
    "create_app",
    "device_json",
    "drift_json",
    "estimate_json",
    "patient_state",
    "quarantine_json",
    "reading_json",
    "risk_json",
    "tls_of",
]
