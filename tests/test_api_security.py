"""What the local API refuses whoever asks, on a real uvicorn server: foreign Host headers
(DNS rebinding from a web page the user opened elsewhere) and cross-origin reads."""

import re
import ssl
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from edge_twin.api import ApiServer, create_app, tls_of
from edge_twin.clock import ManualClock
from edge_twin.config import Config, load_config
from edge_twin.errors import ConfigError
from edge_twin.store import Store
from tests import browser
from tests.conftest import T0, api_user, login_link, self_signed, serving_api


def test_a_foreign_host_header_is_refused(make_config: Callable[..., Config]) -> None:
    cfg = make_config(api={"port": 0, "allowed_hosts": "gateway.local, 192.168.1.20"})
    with serving_api(cfg) as url:
        assert httpx.get(f"{url}/health/live").status_code == 200  # Host: 127.0.0.1:port
        for host in ("gateway.local", "192.168.1.20:8080", "localhost"):
            assert httpx.get(f"{url}/health/live", headers={"Host": host}).status_code == 200
        rebound = httpx.get(f"{url}/patients", headers={"Host": "attacker.example"})
        assert rebound.status_code == 400


def test_no_cross_origin_reads(make_config: Callable[..., Config]) -> None:
    with serving_api(make_config(api={"port": 0})) as url:
        origin = {"Origin": "https://attacker.example"}
        answer = httpx.get(f"{url}/health/live", headers=origin)
        assert "access-control-allow-origin" not in answer.headers
        preflight = httpx.options(
            f"{url}/patients", headers={**origin, "Access-Control-Request-Method": "GET"}
        )
        assert "access-control-allow-origin" not in preflight.headers


def test_the_api_docs_work_offline(make_config: Callable[..., Config]) -> None:
    # The home may have no internet: the docs pages load nothing from a CDN.
    cfg = make_config(api={"port": 0})
    with serving_api(cfg) as url:
        me = api_user(cfg.store.path, "engineer", "eng-bo")
        for page in ("docs", "redoc"):
            html = httpx.get(f"{url}/{page}", headers=me).text
            assert "cdn." not in html
            assets = re.findall(r'(?:src|href)="(/[^"]+\.(?:js|css))"', html)
            assert assets, f"/{page} names no assets of its own"
            for asset in assets:
                served = httpx.get(f"{url}{asset}")
                assert served.status_code == 200
                assert len(served.content) > 10_000
        spec = httpx.get(f"{url}/openapi.json", headers=me).json()
        assert spec["info"]["title"] == "edge-twin gateway"


@pytest.mark.browser
def test_the_api_docs_render_in_chromium_without_a_network(
    make_config: Callable[..., Config],
) -> None:
    cfg = make_config(api={"port": 0})
    with serving_api(cfg) as url:
        link = login_link(cfg.store.path, "engineer")
        rendered = browser.dom(f"{url}{link}&next=/docs", settle_ms=5000)
    assert "opblock" in rendered  # Swagger UI drew the operations of the OpenAPI 3.1 spec
    assert "/patients/{patient_id}/state" in rendered


def test_tls_when_configured(make_config: Callable[..., Config], tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, days=2)
    cfg = make_config(api={"port": 0, "tls_cert": str(cert), "tls_key": str(key)})
    Store(cfg.store.path).close()
    server = ApiServer(create_app(cfg, ManualClock(T0)), "127.0.0.1", 0, tls_of(cfg.api))
    server.start()
    try:
        assert server.url.startswith("https://")
        with httpx.Client(verify=ssl.create_default_context(cafile=str(cert))) as https:
            assert https.get(f"{server.url}/health/live").status_code == 200
            link = https.get(server.url + login_link(cfg.store.path))
            assert link.status_code == 303
            assert "secure" in link.headers["set-cookie"].lower()  # never sent in clear
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on the TLS port
            httpx.get(server.url.replace("https://", "http://") + "/health/live")
    finally:
        server.stop()
    with pytest.raises(ConfigError, match="go together"):
        load_config(env={"EDGE_TWIN_API_TLS_CERT": str(cert)})
