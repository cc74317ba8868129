"""The SQLite store beside the pipeline: readings log, quarantine, provisioning, twin state,
risks, alarms, the forecast log.

Modules: ``database`` (open + migrate), ``migrations`` (the schema's history),
``devices``, ``readings``, ``quarantine``, ``twin_state``, ``risks``, ``alarms``,
``forecasts``. See ``docs/schema.md``.
"""

from edge_twin.store.database import Store

__all__ = ["Store"]
