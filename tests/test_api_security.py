"""What the local API refuses whoever asks, on a real uvicorn server: foreign Host headers
(DNS rebinding from a web page the user opened elsewhere) and cross-origin reads."""

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest

from edge_twin.api import ApiServer, create_app
from edge_twin.clock import ManualClock
from edge_twin.config import Config
from edge_twin.store import Store
from tests import browser
from tests.conftest import T0


@contextmanager
def serving(cfg: Config) -> Iterator[str]:
    Store(cfg.store.path).close()  # a migrated store, as the gateway leaves it
    server = ApiServer(create_app(cfg, ManualClock(T0)), "127.0.0.1", 0)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def test_a_foreign_host_header_is_refused(make_config: Callable[..., Config]) -> None:
    cfg = make_config(api={"port": 0, "allowed_hosts": "gateway.local, 192.168.1.20"})
    with serving(cfg) as url:
        assert httpx.get(f"{url}/health").status_code == 200  # Host: 127.0.0.1:port
        for host in ("gateway.local", "192.168.1.20:8080", "localhost"):
            assert httpx.get(f"{url}/health", headers={"Host": host}).status_code == 200
        rebound = httpx.get(f"{url}/patients", headers={"Host": "attacker.example"})
        assert rebound.status_code == 400


def test_no_cross_origin_reads(make_config: Callable[..., Config]) -> None:
    with serving(make_config(api={"port": 0})) as url:
        origin = {"Origin": "https://attacker.example"}
        answer = httpx.get(f"{url}/health", headers=origin)
        assert "access-control-allow-origin" not in answer.headers
        preflight = httpx.options(
            f"{url}/patients", headers={**origin, "Access-Control-Request-Method": "GET"}
        )
        assert "access-control-allow-origin" not in preflight.headers


def test_the_api_docs_work_offline(make_config: Callable[..., Config]) -> None:
    # The home may have no internet: the docs pages load nothing from a CDN.
    with serving(make_config(api={"port": 0})) as url:
        for page in ("docs", "redoc"):
            html = httpx.get(f"{url}/{page}").text
            assert "cdn." not in html
            assets = re.findall(r'(?:src|href)="(/[^"]+\.(?:js|css))"', html)
            assert assets, f"/{page} names no assets of its own"
            for asset in assets:
                served = httpx.get(f"{url}{asset}")
                assert served.status_code == 200
                assert len(served.content) > 10_000
        assert httpx.get(f"{url}/openapi.json").json()["info"]["title"] == "edge-twin gateway"


@pytest.mark.browser
def test_the_api_docs_render_in_chromium_without_a_network(
    make_config: Callable[..., Config],
) -> None:
    with serving(make_config(api={"port": 0})) as url:
        rendered = browser.dom(f"{url}/docs", settle_ms=5000)
    assert "opblock" in rendered  # Swagger UI drew the operations of the OpenAPI 3.1 spec
    assert "/patients/{patient_id}/state" in rendered
