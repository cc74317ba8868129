"""An OAuth2 token endpoint on loopback for the sync's authentication tests (no
authorisation server can be installed here): client credentials, the client proven by its
secret (HTTP basic) or by a SMART Backend Services JWT assertion, verified with the
client's public key (signature, iss = sub = client id, aud = this endpoint, a lifetime of
at most five minutes, no jti twice). It hands out the token the FHIR test server was
started with."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt

ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class TokenServer:
    def __init__(
        self,
        token: str,
        client_id: str,
        secret: str | None = None,
        public_key: bytes | None = None,
        expires_in: int = 3600,
    ) -> None:
        self.token, self.client_id, self.secret = token, client_id, secret
        self.public_key, self.expires_in = public_key, expires_in
        self.issued = 0
        self.refused: list[str] = []
        self._seen: set[str] = set()
        tokens = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                form = dict(urllib.parse.parse_qsl(body.decode()))
                why = tokens._check(form, self.headers.get("Authorization", ""))
                if why:
                    tokens.refused.append(why)
                    doc, status = {"error": "invalid_client", "error_description": why}, 401
                else:
                    tokens.issued += 1
                    doc = {
                        "access_token": tokens.token,
                        "token_type": "bearer",
                        "expires_in": tokens.expires_in,
                    }
                    status = 200
                payload = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _check(self, form: dict[str, str], authorization: str) -> str | None:
        if form.get("grant_type") != "client_credentials":
            return "grant_type must be client_credentials"
        if self.public_key is not None:
            if form.get("client_assertion_type") != ASSERTION:
                return "a JWT assertion is required"
            try:
                claims = jwt.decode(
                    form.get("client_assertion", ""),
                    self.public_key,
                    algorithms=["RS384", "ES384"],
                    audience=self.url,
                    issuer=self.client_id,
                    options={"require": ["exp", "jti", "sub"]},
                )
            except jwt.PyJWTError as exc:
                return f"assertion: {exc}"
            if claims["sub"] != self.client_id:
                return "sub must be the client id"
            if claims["exp"] > time.time() + 300:
                return "the assertion lives longer than five minutes"
            if claims["jti"] in self._seen:
                return "jti used twice"
            self._seen.add(claims["jti"])
            return None
        expected = base64.b64encode(f"{self.client_id}:{self.secret}".encode()).decode()
        return None if authorization == f"Basic {expected}" else "wrong client secret"

    def __enter__(self) -> TokenServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
