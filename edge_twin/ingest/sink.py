"""The one seam where messages enter the gateway, for live MQTT and replay alike.

Ingest (ingest/mqtt.py) and replay (ingest/replay.py) hand messages to a ``Sink``; the
pipeline is one. Neither knows what runs after the commit, so nothing in ingest imports
the stages downstream of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from edge_twin.ingest.writer import BatchResult, RawMessage


class Sink(Protocol):
    def commit(self, messages: Sequence[RawMessage], statuses: bool = True) -> BatchResult:
        """Decode and durably store ``messages`` (StoreError: nothing stored; then none
        of them may be acknowledged); ``statuses=False``: without recording what the
        devices said about themselves."""
        ...

    def refuse(self, message: RawMessage, why: str) -> BatchResult:
        """Quarantine ``message`` whole as ``internal_error`` with ``why`` (its commit
        failed on a fault of the gateway's own); StoreError if that cannot be stored."""
        ...

    def after_commit(self, result: BatchResult) -> None:
        """Run what follows a durable commit (the twin, risks, alarms)."""
        ...

    def on_idle(self, technical: bool = True) -> None:
        """Nothing is waiting: finish deferred work; check the technical alarms and
        escalation unless ``technical`` is False."""
        ...
