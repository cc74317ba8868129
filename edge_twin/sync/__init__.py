"""Stage 5, sync: FHIR R4 upload of what the gateway stored, surviving days offline.

A consumer of the readings log (store/upstream.py): transaction Bundles with conditional
create, refused resources parked, outages retried with back-off and alarmed by the alert
stage (``upstream_sync_failing``). See docs/sync.md.
"""

from edge_twin.sync.client import FhirClient
from edge_twin.sync.mapping import SUMMARY_S
from edge_twin.sync.status import sync_status
from edge_twin.sync.worker import FhirSync, SyncWorker

__all__ = ["SUMMARY_S", "FhirClient", "FhirSync", "SyncWorker", "sync_status"]
