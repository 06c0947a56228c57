"""The web console over real HTTP against a whole hub: login with existing credentials, who
sees what, CSRF, the audit trail of patient-level views, and re-submitting a dead letter."""

from __future__ import annotations

import httpx
import orjson
import pytest

from hub import clock
from hub.access.audit_store import trail
from tests.support.console import csrf_of, login
from tests.support.hub_server import auth, eventually, running_hub
from tests.support.resources import patient

pytestmark = [pytest.mark.e2e, pytest.mark.contract]
OPS = "demo-app-token-consortium-ops"
DASHBOARD = "demo-app-token-chronic-dashboard"
T1, T2 = "demo-secret-township-1", "demo-secret-township-2"
FHIR_JSON = {"content-type": "application/fhir+json"}
# No code: refused at the gateway (invalid-resource), about township-2's patient p9.
BROKEN = {"resourceType": "Observation", "id": "o9", "status": "final",
          "subject": {"reference": "Patient/p9"}}
FIXED = BROKEN | {"code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
                  "valueQuantity": {"value": 13.1, "unit": "g/dL"},
                  "effectiveDateTime": clock.rfc3339(clock.now())}


def audits(store, patient_key: str) -> set[tuple[str, str, str]]:
    return {(r.agent_id, r.what, r.outcome) for r in trail(store, [patient_key], 500, 0)[1]}


def table_rows(html: str, caption: str) -> str:
    start = html.index(caption)
    return html[start:html.index("</table>", start)]


async def test_login_sessions_who_sees_what_and_audit(make_settings):
    async with running_hub(make_settings()) as (running, base):
        async with httpx.AsyncClient(base_url=base) as c:
            await c.put("/fhir/Patient/p1", json=patient("p1"), headers=auth(T1))
            refused = await c.put("/fhir/Observation/o9", json=BROKEN, headers=auth(T2))
            assert refused.status_code == 422, refused.text
            await c.post("/fhir/Patient", content=b"nope", headers=auth(T1) | FHIR_JSON)

        async with httpx.AsyncClient(base_url=base) as anonymous:
            r = await anonymous.get("/console/deadletters?reason=x")
            assert r.status_code == 303
            assert r.headers["location"] == "/console/login?next=/console/deadletters%3Freason%3Dx"
            # a login without the form's nonce (a cross-site post) is refused
            r = await anonymous.post("/console/login", data={"token": OPS, "nonce": "x"})
            assert r.status_code == 400 and "hub_console=" not in r.headers.get("set-cookie", "")
            r = await login(anonymous, "not-a-token")
            assert r.status_code == 401 and "Unknown credential" in r.text
            # audited like any 401: the token's digest, never the token
            [attempt] = [a for a in trail(running.store, [""], 500, 0)[1]
                         if a.what == "console/login"]
            assert attempt.agent_kind == "unauthenticated" and attempt.outcome == "4"
            assert attempt.agent_id.startswith("token-sha256:")
            assert "hub_console" not in anonymous.cookies

        async with httpx.AsyncClient(base_url=base) as t1:
            r = await login(t1, T1, "/console/deadletters")
            assert r.status_code == 303 and r.headers["location"] == "/console/deadletters"
            cookie = next(h for h in r.headers.get_list("set-cookie")
                          if h.startswith("hub_console="))
            assert {"HttpOnly", "SameSite=strict", "Path=/console"} <= {
                p.strip() for p in cookie.split(";")}
            overview = await t1.get("/console")
            assert overview.status_code == 200
            assert overview.headers["content-security-policy"].startswith("default-src 'self'")
            by_facility = table_rows(overview.text, "<caption>By facility</caption>")
            assert "township-1" in by_facility and "township-2" not in by_facility
            letters = await t1.get("/console/deadletters")
            assert "1 dead letter," in letters.text and "invalid-json" in letters.text
            assert "invalid-resource" not in letters.text  # township-2's
            other = await t1.get("/console/deadletters", params={"facility": "township-2"})
            assert other.status_code == 403
            bad_time = await t1.get("/console/deadletters", params={"since": "yesterday"})
            assert bad_time.status_code == 400 and "is not a time" in bad_time.text
            # a team's alerts name patients: its own facility's team only, audited
            other_team = await t1.get("/console/monitoring", params={"team": "team-c1"})
            assert "The list names patients" in other_team.text
            assert "community-1.home-" not in other_team.text

            async def alerts_listed() -> bool:  # the monitoring service opens them
                own = await t1.get("/console/monitoring", params={"team": "team-t1"})
                return "Alerts of team-t1" in own.text and "township-1.home-01" in own.text

            await eventually(alerts_listed)
            assert ("township-1", "console/monitoring?team=team-t1") in {
                (r.agent_id, r.what) for r in trail(running.store, ["township-1.home-01"],
                                                     500, 0)[1]}

        async with httpx.AsyncClient(base_url=base) as ops:
            await login(ops, OPS)
            letters = await ops.get("/console/deadletters", params={"reason":
                                                                    "invalid-resource"})
            assert "1 dead letter," in letters.text
            letter_id = letters.text.split('href="/console/deadletters/')[1].split('"')[0]
            page = await ops.get(f"/console/deadletters/{letter_id}")
            assert "OperationOutcome" in page.text and "Re-submit" not in page.text
            original = await ops.get(f"/console/deadletters/{letter_id}/original")
            assert orjson.loads(original.content) == BROKEN
            assert original.headers["content-type"] == "application/octet-stream"
            # an operator's view of a letter about a patient is in that patient's trail
            assert ("consortium-ops", f"/deadletters/{letter_id}", "0") in audits(
                running.store, "township-2.p9")
            assert ("consortium-ops", f"/deadletters/{letter_id}/original", "0") in audits(
                running.store, "township-2.p9")

        async with httpx.AsyncClient(base_url=base) as t2:
            await login(t2, T2)
            page = await t2.get(f"/console/deadletters/{letter_id}")
            assert "Re-submit" in page.text
            csrf = csrf_of(page)
            body = orjson.dumps(FIXED).decode()
            forged = await t2.post(f"/console/deadletters/{letter_id}/resubmit",
                                   data={"body": body, "csrf": "guess"})
            assert forged.status_code == 403 and "CSRF" in forged.text
            done = await t2.post(f"/console/deadletters/{letter_id}/resubmit",
                                 data={"body": body, "csrf": csrf})
            assert done.status_code == 200, done.text
            assert "The gateway answered 20" in done.text
            assert ("township-2", f"deadletters/{letter_id}/resubmit PUT /fhir/Observation/o9",
                    "0") in audits(running.store, "township-2.p9")

            async def applied() -> bool:
                found = await t2.get("/console/events",
                                     params={"q": "Observation/township-2.o9"})
                return "not yet" not in found.text and ">shared_record<" in found.text

            await eventually(applied)
            found = await t2.get("/console/events", params={"q": "Observation/township-2.o9"})
            assert "township-2.p9" in found.text
            assert ("township-2", "console/events?q=Observation/township-2.o9", "0") in audits(
                running.store, "township-2.p9")
            # township-2's events are not township-1's to look up
            async with httpx.AsyncClient(base_url=base) as t1:
                await login(t1, T1)
                none = await t1.get("/console/events", params={"q": "Observation/township-2.o9"})
                assert "No journaled event matches" in none.text

            out = await t2.post("/console/logout", data={"csrf": csrf})
            assert out.status_code == 303
            assert (await t2.get("/console")).status_code == 303

        async with httpx.AsyncClient(base_url=base) as dashboard:
            await login(dashboard, DASHBOARD)
            assert (await dashboard.get("/console/deadletters")).status_code == 403
            assert (await dashboard.get("/console/recognition")).status_code == 403
            assert (await dashboard.get("/console/recognition.csv")).status_code == 403
            assert (await dashboard.get("/console/registry")).status_code == 200
