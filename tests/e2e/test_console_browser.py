"""The web console in a real browser: Debian's headless Chromium driven by Playwright.

Every page loads with no console error and no failed request on a network that resolves
no host but the hub's; its filters work; one click path per page; its inputs have labels,
its text has enough contrast, and the keyboard reaches its controls. A screenshot of each
page is kept under test-artifacts/console/.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from hub import clock
from tests.support.hub_server import auth, eventually, running_hub
from tests.support.resources import patient

pytestmark = [pytest.mark.e2e, pytest.mark.contract]
CHROMIUM = "/usr/bin/chromium"
ARTEFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
OPS = "demo-app-token-consortium-ops"
T1 = "demo-secret-township-1"
FHIR_JSON = {"content-type": "application/fhir+json"}

playwright_api = pytest.importorskip("playwright.async_api",
                                     reason="Playwright's Python package is not installed")
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (scripts/ensure-chromium installs it): "
                "no browser to drive the console", allow_module_level=True)

# For every visible form control: does a <label> or an aria-label name it?
UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea')]
  .filter(e => e.type !== 'hidden')
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
  .map(e => e.outerHTML)"""
# WCAG contrast of each text element's colour against the background it is drawn on.
LOW_CONTRAST = """() => {
  const rgb = s => s.match(/[\\d.]+/g).map(Number);
  const lum = c => { const [r, g, b] = c.slice(0, 3).map(v => v / 255)
      .map(v => v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
      return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const bg = e => { for (; e; e = e.parentElement) { const c = rgb(getComputedStyle(e)
      .backgroundColor); if (c.length < 4 || c[3] > 0) return c; } return [255, 255, 255]; };
  return [...document.querySelectorAll('h1, h2, p, th, td, a, button, label, caption, dt, dd')]
    .filter(e => e.offsetParent !== null && e.textContent.trim())
    .map(e => { const a = lum(rgb(getComputedStyle(e).color)), b = lum(bg(e));
                return [e.tagName + ': ' + e.textContent.trim().slice(0, 40),
                        (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)]; })
    .filter(([, ratio]) => ratio < 4.5); }"""
CHARTS_DRAWN = """() => [...document.querySelectorAll('canvas[data-chart]')]
  .map(c => Boolean(window.Chart && Chart.getChart(c)))"""


class Watched:
    """A page whose console errors, uncaught exceptions and failed requests are kept."""

    def __init__(self, page) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.problems.append(m.text))
        page.on("pageerror", lambda e: self.problems.append(f"uncaught: {e}"))
        page.on("requestfailed", lambda r: self.problems.append(f"failed: {r.url}"))
        page.on("response", lambda r: r.status >= 400 and self.problems.append(
            f"{r.status}: {r.url}"))

    async def check(self, name: str) -> None:
        """No problem so far, every control labelled, readable contrast, charts drawn; then
        a screenshot."""
        await self.page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)
        assert self.problems == [], (name, self.problems)
        assert await self.page.evaluate(UNLABELLED) == [], name
        assert await self.page.evaluate(LOW_CONTRAST) == [], name
        assert all(await self.page.evaluate(CHARTS_DRAWN)), name
        assert await self.page.locator("h1").count() == 1, name


async def focus_order(page, presses: int) -> list[str]:
    """What Tab focuses, in order: each element's id, else its text."""
    seen = []
    for _ in range(presses):
        await page.keyboard.press("Tab")
        seen.append(await page.evaluate(
            "() => document.activeElement.id || document.activeElement.textContent.trim()"))
    return seen


async def show_one(w: Watched, page_name: str, label: str, choice: str, caption: str
                   ) -> None:
    """From the navigation to ``page_name``, choose ``choice`` in the list ``label``, and
    see the table captioned ``caption``."""
    page = w.page
    await page.get_by_role("link", name=page_name).click()
    await page.get_by_label(label).select_option(choice)
    await page.get_by_role("button", name="Show").click()
    await page.wait_for_selector(f"caption:has-text('{caption}')")
    await w.check(page_name.lower())


async def seed(base: str) -> None:
    """A patient, an observation and a refused body, from township-1."""
    async with httpx.AsyncClient(base_url=base, headers=auth(T1)) as c:
        await c.put("/fhir/Patient/p1", json=patient("p1"))
        obs = {"resourceType": "Observation", "id": "o1", "status": "final",
               "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
               "subject": {"reference": "Patient/p1"},
               "effectiveDateTime": clock.rfc3339(clock.now()),
               "valueQuantity": {"value": 13.1, "unit": "g/dL"}}
        done = await c.put("/fhir/Observation/o1", json=obs)
        assert done.status_code in (200, 201), done.text
        await c.post("/fhir/Patient", content=b"nope", headers=FHIR_JSON)


async def test_every_console_page_in_a_browser(make_settings):
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    async with running_hub(make_settings()) as (_, base):
        await seed(base)
        async with playwright_api.async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu",
                      # an offline hospital network: nothing resolves but the hub
                      "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"])
            try:
                page = await (await browser.new_context(accept_downloads=True)).new_page()
                await run_pages(Watched(page), base)
            finally:
                await browser.close()


async def run_pages(w: Watched, base: str) -> None:
    page = w.page
    # Login: the form is reached and sent with the keyboard alone.
    await page.goto(f"{base}/console/deadletters")
    assert "/console/login" in page.url
    await w.check("login")
    await page.get_by_label("Token").fill(OPS)
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"{base}/console/deadletters")

    # Dead letters: filter, open one, download the original.
    await page.get_by_label("Reason").fill("invalid-json")
    await page.get_by_role("button", name="Filter").click()
    await page.wait_for_url("**reason=invalid-json**")
    rows = page.locator("table tbody tr")
    assert await rows.count() == 1 and "invalid-json" in await rows.first.inner_text()
    await w.check("deadletters")
    order = await focus_order(page, 20)
    assert order[0] == "Skip to content"
    assert {"f-reason", "f-facility", "f-since", "f-until", "f-event", "Filter"} <= set(order)
    await rows.first.get_by_role("link").click()
    await page.wait_for_selector("text=OperationOutcome")
    async with page.expect_download() as download:
        await page.get_by_role("link", name="Download the original bytes").click()
    assert Path(await (await download.value).path()).read_bytes() == b"nope"
    await w.check("deadletter")

    # Overview: reached from the navigation; the chart is drawn, the projections listed.
    await page.get_by_role("navigation").get_by_role("link", name="Overview").click()
    await page.wait_for_selector("table.projections")
    assert "township-1" in await page.locator("table", has_text="By facility").inner_text()
    await w.check("overview")

    # Event lookup: the observation, and which projections applied it.
    await page.get_by_role("link", name="Event lookup").click()
    await page.get_by_label("Event id or resource").fill("Observation/township-1.o1")
    await page.keyboard.press("Enter")
    await page.wait_for_selector("text=Which projections applied it")

    async def all_applied() -> bool:
        await page.reload()
        text = await page.locator("section.event table").inner_text()
        return "not yet" not in text and "shared_record" in text

    await eventually(all_applied)
    await w.check("events")

    # Recognition: a month filter, and the CSV.
    await page.get_by_role("link", name="Recognition", exact=True).click()
    await page.get_by_label("Month", exact=True).fill(clock.now().astimezone(clock.CONSORTIUM_TZ)
                                          .strftime("%Y-%m"))
    await page.get_by_role("button", name="Filter").click()
    await page.wait_for_url("**month=**")
    async with page.expect_download() as csv:
        await page.get_by_role("link", name="Download CSV").click()
    assert Path(await (await csv.value).path()).read_bytes().startswith(
        "\ufefffacility,month,item".encode())
    await w.check("recognition")

    # Reading: choose a centre's worklist.
    await show_one(w, "Reading", "Worklist of", "county-1", "Worklist of county-1")

    # Referral: a month filter.
    await page.get_by_role("link", name="Referral").click()
    await page.get_by_label("Month", exact=True).fill("2026-01")
    await page.get_by_role("button", name="Filter").click()
    await page.wait_for_url("**month=2026-01**")
    await w.check("referrals")

    # Monitoring: a family-doctor team's alerts.
    await show_one(w, "Monitoring", "Alerts of team", "team-c1", "Alerts of team-c1")

    # Registry: a facility's history.
    await page.get_by_role("link", name="Registry").click()
    await page.get_by_role("link", name="county-1", exact=True).click()
    await page.wait_for_selector("text=History of county-1")
    assert "county-1#" in await page.locator("table").nth(1).inner_text()
    await w.check("registry")

    # Log out with the keyboard: the session ends.
    await page.get_by_role("button", name="Log out").focus()
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/console/login")
    await page.goto(f"{base}/console")
    assert "/console/login" in page.url
