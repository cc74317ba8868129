"""A loopback HTTP proxy in front of the FHIR test server that plays the faults a real
upstream has and the test server cannot produce on demand: down (connection refused or
reset), 503, 429 with Retry-After, a reply slower than the client's timeout (after the
server did the work), a redirect, and a server-side business rule that refuses some
resources (422 with an OperationOutcome). Everything else is forwarded unchanged."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Rule = Callable[[dict[str, Any]], str | None]  # a bundle -> why it is refused, or None


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that gave up on a slow answer: expected here


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.mode = "pass"  # pass | reset | 503 | 429 | slow | redirect
        self.retry_after = "1"
        self.slow_s = 3.0
        self.refuse: Rule | None = None
        self.requests = 0
        self.faults = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                proxy._handle(self)

            def do_POST(self) -> None:
                proxy._handle(self)

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/fhir"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        self.requests += 1
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        mode = self.mode
        if mode != "pass":
            self.faults += 1
        if mode == "reset":
            h.close_connection = True
            h.connection.close()
            return
        if mode in ("503", "429"):
            extra = {"Retry-After": self.retry_after} if mode == "429" else {}
            return self._reply(h, int(mode), {"resourceType": "OperationOutcome"}, extra)
        if mode == "redirect":
            return self._reply(h, 301, {}, {"Location": self.upstream + "/elsewhere"})
        if self.refuse is not None and body:
            why = self.refuse(json.loads(body))
            if why is not None:
                outcome = {
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": "error", "code": "business-rule", "diagnostics": why}],
                }
                return self._reply(h, 422, outcome)
        target = self.upstream + h.path.removeprefix("/fhir")
        headers = {
            k: v
            for k, v in h.headers.items()
            if k.lower() in ("content-type", "authorization", "accept")
        }
        request = urllib.request.Request(target, body or None, headers, method=h.command)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        if mode == "slow":
            # The server did the work; its answer comes after the client gave up (a
            # resend must then create nothing twice).
            time.sleep(self.slow_s)
        h.send_response(status)
        h.send_header("Content-Type", "application/fhir+json")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)

    @staticmethod
    def _reply(
        h: BaseHTTPRequestHandler,
        status: int,
        doc: dict[str, Any],
        extra: dict[str, str] | None = None,
    ) -> None:
        payload = json.dumps(doc).encode()
        h.send_response(status)
        for k, v in {"Content-Type": "application/fhir+json", **(extra or {})}.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)
