"""The FHIR R4 server's adapter: transaction Bundles over HTTPS, authentication, and the
translation of every HTTP outcome into the one exception tree.

    2xx                        accepted (each entry's own status checked too)
    429, 5xx, 408, 409,        UpstreamError: retried later (Retry-After honoured)
    timeouts,
    connection refused
    401 / 403                  UpstreamError: a fresh token is fetched once; then the
                               deployment's credentials are wrong (retried, alarmed)
    3xx                        UpstreamError: a redirect is never followed (a POST re-sent
                               as GET would lose its body and look like success); sync.url
                               must name the server itself
    other 4xx                  UpstreamRefused: the server will not take this content as
                               it is

TLS certificates are always verified (``sync.ca_file`` adds a private CA).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import jwt

from edge_twin.config import SyncSection
from edge_twin.errors import ConfigError, UpstreamError, UpstreamRefused

Resource = dict[str, Any]
# 409: a concurrent write won (version conflict): the same request may pass next time.
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
TOKEN_MARGIN_S = 60.0  # a token is renewed this long before it expires
ASSERTION_LIFETIME_S = 300.0  # SMART Backend Services: at most five minutes
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class TokenSource:
    """Where the bearer token comes from: a static one, or OAuth2 client credentials at
    ``token_url``, renewed before it expires. The client proves itself with its secret
    (HTTP basic auth) or, as SMART Backend Services asks, with a short-lived JWT signed
    by its private key (``client_assertion``)."""

    def __init__(self, cfg: SyncSection, http: httpx.Client, now: Callable[[], float]) -> None:
        self._cfg = cfg
        self._http = http
        self._now = now
        self._token = cfg.token
        self._expires = float("inf") if cfg.token else 0.0
        self._lock = threading.Lock()
        self._key: Any = None
        if cfg.token_url and cfg.private_key_file:
            try:
                self._key = Path(cfg.private_key_file).read_bytes()
            except OSError as exc:
                raise ConfigError(f"sync.private_key_file: cannot read it ({exc})") from exc
        elif cfg.token_url and not cfg.client_secret:
            raise ConfigError(
                "sync.token_url needs sync.client_secret or sync.private_key_file to prove"
                " the gateway's identity"
            )
        if cfg.token_url and not cfg.client_id:
            raise ConfigError("sync.token_url needs sync.client_id")

    @property
    def enabled(self) -> bool:
        return bool(self._cfg.token or self._cfg.token_url)

    def header(self) -> dict[str, str]:
        if not self.enabled:
            return {}
        with self._lock:
            if self._now() >= self._expires - TOKEN_MARGIN_S:
                self._fetch()
            return {"Authorization": f"Bearer {self._token}"}

    def invalidate(self) -> None:
        with self._lock:
            if self._cfg.token_url:
                self._expires = 0.0

    def _fetch(self) -> None:
        cfg = self._cfg
        form = {"grant_type": "client_credentials"}
        if cfg.scope:
            form["scope"] = cfg.scope
        try:
            if self._key is not None:
                form["client_assertion_type"] = JWT_BEARER
                form["client_assertion"] = self._assertion()
                response = self._http.post(cfg.token_url, data=form)
            else:
                secret = (cfg.client_id, cfg.client_secret)
                response = self._http.post(cfg.token_url, data=form, auth=secret)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"token endpoint {cfg.token_url}: {exc}") from exc
        if response.status_code != 200:
            raise UpstreamError(f"token endpoint {cfg.token_url} answered {response.status_code}")
        try:
            doc = response.json()
            self._token = str(doc["access_token"])
            self._expires = self._now() + float(doc.get("expires_in", 300))
        except (ValueError, KeyError, TypeError) as exc:
            raise UpstreamError(f"token endpoint {cfg.token_url}: no access_token ({exc})") from exc

    def _assertion(self) -> str:
        """The signed JWT: issuer and subject the client id, audience the token endpoint,
        valid five minutes, a unique id (SMART Backend Services)."""
        cfg = self._cfg
        now = self._now()
        claims = {
            "iss": cfg.client_id,
            "sub": cfg.client_id,
            "aud": cfg.token_url,
            "exp": int(now + ASSERTION_LIFETIME_S),
            "jti": secrets.token_hex(16),
        }
        headers = {"kid": cfg.key_id} if cfg.key_id else None
        try:
            return jwt.encode(claims, self._key, algorithm=cfg.jwt_alg, headers=headers)
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise ConfigError(
                f"sync.private_key_file cannot sign a {cfg.jwt_alg} JWT: {exc}"
            ) from exc


class FhirClient:
    def __init__(self, cfg: SyncSection, now: Callable[[], float] = time.time) -> None:
        if not cfg.url.startswith(("http://", "https://")):
            raise ConfigError(f"sync.url {cfg.url!r} must start with http:// or https://")
        verify: Any = cfg.ca_file or True
        self.base = cfg.url.rstrip("/")
        self._http = httpx.Client(
            timeout=cfg.timeout_s,
            verify=verify,
            follow_redirects=False,
            headers={"Accept": "application/fhir+json"},
        )
        self._tokens = TokenSource(cfg, self._http, now)

    def close(self) -> None:
        self._http.close()

    def transaction(self, entries: Sequence[Resource]) -> list[Resource]:
        """POST a transaction Bundle; returns the response's entries (one per request)."""
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}
        doc = self._request("POST", self.base, bundle)
        if doc.get("resourceType") != "Bundle":
            raise UpstreamError(
                f"{self.base} answered a transaction with {doc.get('resourceType')}"
            )
        answered: list[Resource] = doc.get("entry", [])
        if len(answered) != len(entries):
            raise UpstreamError(
                f"{self.base} answered {len(answered)} entries for {len(entries)} sent"
            )
        return answered

    def search(self, resource_type: str, params: dict[str, str]) -> Resource:
        return self._request("GET", f"{self.base}/{resource_type}", None, params)

    def _request(
        self, method: str, url: str, body: Resource | None, params: dict[str, str] | None = None
    ) -> Resource:
        for attempt in (1, 2):
            headers = {**self._tokens.header()}
            if body is not None:
                headers["Content-Type"] = "application/fhir+json"
            try:
                response = self._http.request(
                    method,
                    url,
                    content=None if body is None else json.dumps(body, separators=(",", ":")),
                    params=params,
                    headers=headers,
                )
            except httpx.HTTPError as exc:  # connect, read, timeouts, protocol errors
                raise UpstreamError(f"{url}: {type(exc).__name__}: {exc}") from exc
            status = response.status_code
            if status in (401, 403) and attempt == 1 and self._tokens.enabled:
                self._tokens.invalidate()
                continue
            if 200 <= status < 300:
                try:
                    doc: Resource = response.json()
                except ValueError as exc:
                    raise UpstreamError(f"{url}: a {status} that is not JSON") from exc
                return doc
            if 300 <= status < 400:
                # Never followed (a POST re-sent as GET loses its body); not a refusal of
                # the content either: the deployment's sync.url needs fixing.
                raise UpstreamError(
                    f"{url} redirects ({status}) to {response.headers.get('Location')!r}:"
                    " set sync.url to the server's own address"
                )
            if status in RETRY_STATUSES or status in (401, 403):
                # The body is not quoted: a server's error text may echo patient data.
                raise UpstreamError(
                    f"{url} answered {status}", _retry_after(response.headers.get("Retry-After"))
                )
            raise UpstreamRefused(f"{url} answered {status}", status, response.text)
        raise AssertionError("unreachable")


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
