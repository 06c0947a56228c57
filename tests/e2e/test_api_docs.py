"""The API docs work on a network without internet: every asset comes from the hub itself.

The pages are fetched from a running hub over real HTTP, every ``src``/``href`` they name is
fetched too, and no page names another host. Where Debian's ``chromium`` is installed, a
headless browser that cannot resolve any host but 127.0.0.1 renders both pages and takes a
screenshot of ``/docs``.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
import yaml

from tests.support.hub_server import running_hub

pytestmark = [pytest.mark.e2e, pytest.mark.contract]
PAGES = ("/docs", "/redoc")
CHROMIUM = "/usr/bin/chromium"


class _Links(HTMLParser):
    """Every URL a page makes the browser load: src, href, and ReDoc's spec-url."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "spec-url") and value:
                self.urls.append(value)


def referenced(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    # Swagger UI is told where the OpenAPI document is in its inline script.
    return parser.urls + re.findall(r"""\burl:\s*['"]([^'"]+)['"]""", html)


async def test_docs_pages_and_every_asset_they_name_come_from_the_hub(make_settings):
    async with running_hub(make_settings()) as (_, base):
        host = urlsplit(base).netloc
        async with httpx.AsyncClient(base_url=base, timeout=30) as c:
            for page in PAGES:
                r = await c.get(page)
                assert r.status_code == 200, (page, r.text[:200])
                assert r.headers["content-type"].startswith("text/html")
                html = r.text
                elsewhere = [u for u in re.findall(r"https?://[^\s\"'<>)]+", html)
                             if urlsplit(u).netloc != host]
                assert elsewhere == [], f"{page} names other hosts: {elsewhere}"
                urls = referenced(html)
                kinds = {urlsplit(u).path.rsplit(".", 1)[-1] for u in urls}
                assert {"js", "png", "json"} <= kinds, (page, urls)  # script, icon, spec
                if page == "/docs":
                    assert "css" in kinds
                for url in urls:
                    target = urljoin(f"{base}{page}", url)
                    assert urlsplit(target).netloc == host, url
                    asset = await c.get(target)
                    assert asset.status_code == 200, (page, url, asset.status_code)
                    assert len(asset.content) > 100, (page, url)
                    if url.endswith(".js"):
                        assert "javascript" in asset.headers["content-type"]
            # the packaged ReDoc looks for its footer logo beside the page, not on a CDN
            redoc_js = (await c.get("/redoc/redoc.standalone.js")).text
            assert "cdn.redoc.ly" not in redoc_js
            assert (await c.get("/redoc/logo-mini.svg")).status_code == 200
            # the licences of the vendored files are served with them
            for licence in ("/docs/LICENSE", "/redoc/redoc.standalone.js.LICENSE.txt",
                            "/docs/fastapi/LICENSE"):
                assert (await c.get(licence)).status_code == 200, licence
            # the default CDN pages are gone, and the API's own answers are unchanged
            assert (await c.get("/docs/oauth2-redirect")).status_code == 404
            assert (await c.get("/openapi.json")).json()["info"]["title"] == "HIE hub"


async def test_asyncapi_document_is_served_beside_the_docs_with_this_hubs_topics(
        make_settings):
    settings = make_settings()
    async with running_hub(settings) as (_, base), \
            httpx.AsyncClient(base_url=base, timeout=30) as c:
        r = await c.get("/asyncapi")
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        doc = r.json()
        assert doc["asyncapi"].startswith("3.") and doc["info"]["title"] == "HIE hub event log"
        addresses = {ch["address"] for ch in doc["channels"].values()}
        # this hub's topic names (the test's own), not the stock ones
        assert set(settings.topics.model_dump().values()) <= addresses
        assert "hie.lab.v1" not in addresses
        y = await c.get("/asyncapi.yaml")
        assert y.headers["content-type"].startswith("application/yaml")
        assert yaml.safe_load(y.text) == doc
        assert "LabChange" in doc["components"]["schemas"]


def _chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp / 'profile'}",
         # An offline hospital network: no host resolves except the hub's own address.
         "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
         "--virtual-time-budget=15000", *args],
        capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not Path(CHROMIUM).exists(),
                    reason="Debian's chromium is not installed (apt-get install chromium): "
                           "no browser to render /docs and /redoc")
async def test_a_browser_without_internet_renders_both_pages(make_settings, tmp_path):
    async with running_hub(make_settings()) as (_, base):
        shot = tmp_path / "docs.png"
        done = await asyncio.to_thread(_chromium, "--window-size=1280,1600",
                                       f"--screenshot={shot}", f"{base}/docs", tmp=tmp_path)
        assert shot.exists(), done.stderr[-2000:]
        png = shot.read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 20_000  # more than a blank page
        swagger = await asyncio.to_thread(_chromium, "--dump-dom", f"{base}/docs",
                                          tmp=tmp_path)
        # Rendered by Swagger UI's script: the title and one block per operation.
        assert "HIE hub" in swagger.stdout and "opblock" in swagger.stdout, \
            swagger.stdout[-2000:]
        assert "/fhir/metadata" in swagger.stdout
        redoc = await asyncio.to_thread(_chromium, "--dump-dom", f"{base}/redoc",
                                        tmp=tmp_path)
        assert "api-info" in redoc.stdout and "/fhir/metadata" in redoc.stdout, \
            redoc.stdout[-2000:]
        print(f"screenshot of /docs: {shot}")  # shown with pytest -s, kept in the tmp dir
