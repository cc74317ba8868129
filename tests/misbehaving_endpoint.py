"""A loopback HTTP endpoint that answers each request as scripted, including the ways a
real on-call system, proxy or captive portal misbehaves and no well-behaved test server
will: a reply that is not HTTP, a body cut short, a redirect, a timeout, 4xx and 5xx.

    endpoint.script(["garbage", "incomplete", "500", "ok"])   # then "ok" for ever

Every request is kept (method, path, headers, body), whatever the answer."""

from __future__ import annotations

import socketserver
import threading
import time
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    answer: str = ""  # what it was answered (a name of ANSWERS, or "timeout")


ANSWERS = {
    "ok": b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
    "garbage": b"HELLO THERE\r\n\r\n",  # http.client: BadStatusLine
    "incomplete": (  # http.client: IncompleteRead
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\nshort"
    ),
    "redirect": b"HTTP/1.1 301 Moved Permanently\r\nLocation: /moved\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n",
    "404": b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    "400": b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    "401": b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    "422": b"HTTP/1.1 422 Unprocessable Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    "500": b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    "429": b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n",
}


class MisbehavingEndpoint:
    def __init__(self, timeout_hold_s: float = 3.0) -> None:
        self.requests: list[Request] = []
        self._script: deque[str] = deque()
        self.default = "ok"
        self._hold_s = timeout_hold_s
        self._lock = threading.Lock()
        endpoint = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                endpoint._handle(self)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/oncall/T0KEN-in-the-path"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def script(self, answers: list[str]) -> None:
        with self._lock:
            self._script.extend(answers)

    def posts(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST"]

    def _next(self) -> str:
        with self._lock:
            return self._script.popleft() if self._script else self.default

    def _handle(self, conn: socketserver.StreamRequestHandler) -> None:
        line = conn.rfile.readline().decode("latin-1").split()
        if len(line) < 2:
            return
        headers: dict[str, str] = {}
        while (raw := conn.rfile.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = conn.rfile.read(int(headers.get("content-length", "0")))
        answer = self._next()
        with self._lock:
            self.requests.append(Request(line[0], line[1], headers, body, answer))
        if answer == "timeout":
            time.sleep(self._hold_s)
            return
        conn.wfile.write(ANSWERS[answer])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
