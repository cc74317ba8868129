"""The SQLite store beside the pipeline: readings log, quarantine, provisioning, twin state,
risks, alarms, the forecast log.

Modules: ``database`` (open + migrate), ``migrations`` (the schema's history),
``devices``, ``readings``, ``quarantine``, ``twin_state``, ``risks``, ``alarms``,
``forecasts``, ``consumers`` (durable positions in the logs), ``upstream`` (FHIR sync's
consent, parked resources and summary windows), ``users`` (users, sessions, the access
log), ``displays`` (bedside displays on the broker and their patients), ``credentials``
(the broker's users, their password hashes, the provisioning log), ``uploaders``
(phones uploading like a Nightscout client, by secret), ``treatments`` (what they
reported: carbohydrates, insulin). See ``docs/schema.md``.
"""

from edge_twin.store import (
    alarms,
    consumers,
    credentials,
    devices,
    displays,
    forecasts,
    quarantine,
    readings,
    risks,
    treatments,
    twin_state,
    uploaders,
    upstream,
    users,
)
from edge_twin.store.database import PipelineLock, Store

# The store is a library of tables: each module (and what it defines) is public.
__all__ = [
    "PipelineLock",
    "Store",
    "alarms",
    "consumers",
    "credentials",
    "devices",
    "displays",
    "forecasts",
    "quarantine",
    "readings",
    "risks",
    "treatments",
    "twin_state",
    "uploaders",
    "upstream",
    "users",
]
