"""What the bridge remembers per device: the last stored record delivered (its sequence
number), so a meter back after days away sends only what is new. Written atomically
after each PUBACK. Lost, it only costs a full fetch: the gateway stores a record once."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


class BridgeState:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            loaded = {}
        except (OSError, ValueError):
            loaded = {}  # a damaged file: fetch everything again (stored once anyway)
        self._last: dict[str, int] = {
            k: v for k, v in loaded.get("last_sequence", {}).items() if isinstance(v, int)
        }

    def last_sequence(self, device_id: str) -> int | None:
        return self._last.get(device_id)

    def delivered(self, device_id: str, sequence: int) -> None:
        if sequence <= self._last.get(device_id, -1):
            return
        self._last[device_id] = sequence
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".state-")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"last_sequence": self._last}, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)
