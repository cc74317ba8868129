"""Beside the pipeline: the local FastAPI service and the care-team dashboard."""
