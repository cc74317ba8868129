"""Stage 5, sync: FHIR R4 upload of readings, estimates, risks and alerts, surviving days
offline (store-and-forward with conditional create). See docs/architecture.md.

Not built yet; the demo's summary says so.
"""

__all__: list[str] = []
