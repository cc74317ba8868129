"""The SQLite store beside the pipeline: readings log, quarantine, provisioning, twin state.

Modules: ``database`` (open + migrate), ``migrations`` (the schema's history),
``devices``, ``readings``, ``quarantine``, ``twin_state``. See ``docs/schema.md``.
"""

from edge_twin.store.database import Store

__all__ = ["Store"]
