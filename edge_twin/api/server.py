"""Serving the FastAPI app with uvicorn on a background thread (gateway and demo)."""

from __future__ import annotations

import threading
import time

import uvicorn
from fastapi import FastAPI

from edge_twin.config import ApiSection
from edge_twin.errors import EdgeTwinError
from edge_twin.workers import Workers

WORKER = "api"  # its name on /health


def tls_of(api: ApiSection) -> tuple[str, str] | None:
    return (api.tls_cert, api.tls_key) if api.tls_cert else None


class ApiServer:
    def __init__(
        self,
        app: FastAPI,
        host: str,
        port: int,
        tls: tuple[str, str] | None = None,
        workers: Workers | None = None,
    ) -> None:
        """``tls``: (certificate, private key) PEM files: served over HTTPS. ``workers``:
        the gateway's watched threads (the server ending by itself is a death)."""
        self._workers = workers or Workers()
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                ssl_certfile=tls[0] if tls else None,
                ssl_keyfile=tls[1] if tls else None,
                log_level="warning",
                access_log=False,
                # Open event streams are told to end (app.state.closing); this bounds
                # the wait for anything else.
                timeout_graceful_shutdown=5,
            )
        )
        self._app = app
        self.scheme = "https" if tls else "http"
        self._thread: threading.Thread | None = None
        self.host = host
        self.port = port

    def start(self, timeout: float = 10.0) -> None:
        self._thread = self._workers.thread(WORKER, self._server.run)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise EdgeTwinError(
                    f"the API did not start on {self.host}:{self.port} (port in use? set"
                    " api.port or EDGE_TWIN_API_PORT)"
                )
            time.sleep(0.02)
        sockets = self._server.servers[0].sockets if self._server.servers else []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def stop(self) -> None:
        closing = getattr(self._app.state, "closing", None)
        if closing is not None:
            closing.set()
        self._workers.stopping(WORKER)
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
