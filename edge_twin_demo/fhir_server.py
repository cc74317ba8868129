"""A real FHIR R4 server for the demo, the tests and bench/sync.py: Medplum's FHIR router
with an in-memory repository (tools/fhir-server/server.js: validation, atomic
transactions, conditional create), on a free loopback port, stopped with the context.

A missing ``node`` or missing packages fail loudly: ``scripts/setup.sh`` installs both.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SERVER_DIR = ROOT / "tools" / "fhir-server"
START_TIMEOUT_S = 30.0


class FhirTestServer:
    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.url = ""
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> FhirTestServer:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not installed: run scripts/setup.sh")
        if not (SERVER_DIR / "node_modules" / "@medplum" / "fhir-router").is_dir():
            raise RuntimeError(f"{SERVER_DIR} has no node_modules: run scripts/setup.sh")
        cmd = [node, str(SERVER_DIR / "server.js"), "--port", "0", "--host", "127.0.0.1"]
        if self.token is not None:
            cmd += ["--token", self.token]
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=SERVER_DIR
        )
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self._proc.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(START_TIMEOUT_S)
        if not line or not line[0].startswith("listening "):
            self.stop()
            raise RuntimeError(f"the FHIR test server did not start: {line[:1]}")
        self.url = line[0].split()[1]
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            for stream in (self._proc.stdout, self._proc.stderr):
                if stream is not None:
                    stream.close()
            self._proc = None

    def __enter__(self) -> FhirTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what a test or the demo asks the server ------------------------------------------

    def get(self, path: str) -> dict[str, Any]:
        request = urllib.request.Request(f"{self.url}/{path}", headers=self._headers())
        with urllib.request.urlopen(request, timeout=30) as response:
            doc: dict[str, Any] = json.load(response)
        return doc

    def count(self, resource_type: str, query: str = "") -> int:
        doc = self.get(f"{resource_type}?_count=0{'&' + query if query else ''}")
        return int(doc["total"])

    def all(self, resource_type: str, query: str = "") -> list[dict[str, Any]]:
        doc = self.get(f"{resource_type}?_count=100000{'&' + query if query else ''}")
        return [e["resource"] for e in doc.get("entry", [])]

    def counts(self) -> dict[str, int]:
        """Resources held, by type (those the gateway sends)."""
        kinds = (
            "Patient",
            "Device",
            "Observation",
            "CommunicationRequest",
            "Communication",
            "Flag",
            "RiskAssessment",
        )
        return {k: self.count(k) for k in kinds}

    def reset(self) -> None:
        request = urllib.request.Request(
            f"{self.url}/$reset", b"", headers=self._headers(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}
