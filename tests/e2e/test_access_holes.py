"""Holes closed at the edge (text no store can hold, access), through real HTTP on a running hub:

* text no store can hold (NUL) is refused on every entry path and reaches no store;
* every endpoint checks the scope of the projection it reads; /metrics needs a metrics app;
* requests refused with 401 are audited;
* numeric parameters are bounded (400, never a store error);
* the gateway takes only FHIR JSON (415 otherwise);
* nobody writes another facility's resource (403).
"""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest
import sqlalchemy as sa
from fastapi.routing import APIRoute

from adapters.sdk import FacilityPublisher
from hub.access.rules import UNAUTHENTICATED
from hub.api.app import create_app
from hub.api.deps import get_facility
from hub.facilities import App
from hub.log.inspect import read_deadletters
from hub.registry.consortium_file import read_consortium, write_consortium
from hub.signing import demo_signer
from hub.store.schema import audit, journal
from tests.support.hub_server import auth, eventually, running_hub, status_of
from tests.support.resources import bundle, observation, patient

pytestmark = [pytest.mark.e2e, pytest.mark.contract]
T1, CITY = "demo-secret-township-1", "demo-secret-city-1"
DASHBOARD = "demo-app-token-chronic-dashboard"  # shared_record; township-1/2, village-1/2
MONITOR = "demo-app-token-hub-monitor"  # metrics only
LAB_APP = "lab-app-token-0123456789"  # lab only, every facility (added below)
NUL = "\u0000"


def with_nul(oid: str) -> dict:
    return {**observation(oid), "note": [{"text": f"before{NUL}after"}]}


def expressions(oo: dict) -> set[str]:
    return {e for i in oo["issue"] for e in i.get("expression", [])}


# -- every route declares what it reads --------------------------------------------------

# Routes that check their scope in the body, because what they read depends on the request
# (or, for the audit trail, because a refusal is itself audited), and routes open to all.
CHECKED_IN_BODY = {("GET", "/fhir/{rtype}"), ("GET", "/fhir/AuditEvent"),
                   ("GET", "/metrics")}
# /health and /ready say whether the process serves and whether its broker, store and
# components are there (an orchestrator's probes carry no token); no data of anyone.
OPEN = {("GET", "/fhir/metadata"), ("GET", "/healthz"), ("GET", "/health"), ("GET", "/ready")}


def test_every_route_checks_a_scope_or_a_facility():
    """A new endpoint must say which projection it reads (``scoped(...)``), or be a
    facility's write, or be listed above: a forgotten check fails here."""
    app = create_app(None)  # type: ignore[arg-type]  # routes only; nothing is served
    unchecked = []
    for route in app.routes:
        if not isinstance(route, APIRoute) or route.path.startswith(
                ("/docs", "/redoc", "/asyncapi")):
            continue  # the API and AsyncAPI docs, their pages and assets: public, no data
        calls = {d.call for d in route.dependant.dependencies}
        projections = {getattr(c, "projection", None) for c in calls} - {None}
        for method in route.methods:
            if (method, route.path) in CHECKED_IN_BODY | OPEN:
                continue
            if not (projections or get_facility in calls):
                unchecked.append((method, route.path))
    assert unchecked == [], f"routes without a scope check: {unchecked}"


# -- on SQLite and PostgreSQL ------------------------------------------------------------

async def test_nul_bounds_and_refused_credentials(make_settings, store_url):
    settings = make_settings(database_url=store_url)
    async with running_hub(settings) as (hub, base), \
            httpx.AsyncClient(base_url=base, headers=auth(T1)) as t1, \
            httpx.AsyncClient(base_url=base, headers=auth(CITY)) as city:
        # Item 6: NUL at every entry path.
        r = await t1.put("/fhir/Observation/nul1", json=with_nul("nul1"))
        assert r.status_code == 422, r.text
        assert expressions(r.json()) == {"Observation.note[0].text"}
        r = await t1.post("/fhir/Observation", json=with_nul("nul2"))
        assert r.status_code == 422 and expressions(r.json()) == {"Observation.note[0].text"}
        r = await t1.post("/fhir", json=bundle("batch", patient("p1"), with_nul("nul3")))
        assert [e["response"]["status"] for e in r.json()["entry"]] == [
            "201 Created", "400 Bad Request"]
        assert expressions(r.json()["entry"][1]["response"]["outcome"]) == {
            "Observation.note[0].text"}
        r = await t1.post("/fhir", json=bundle("transaction", observation("tx-ok"),
                                               with_nul("nul4")))
        assert r.status_code == 400
        assert "Bundle.entry[1].resource.Observation.note[0].text" in expressions(r.json())

        def publish_inbound() -> None:
            sdk = FacilityPublisher(settings.bootstrap, demo_signer("township-1"),
                                    topic=settings.topics.inbound)
            sdk.publish(with_nul("nul5"))
            sdk.publish(observation("inbound-ok"))
            sdk.flush()
            sdk.close()

        await asyncio.to_thread(publish_inbound)
        r = await t1.put("/fhir/Observation/after", json=observation("after"))
        assert r.status_code == 201, r.text

        async def settled() -> bool:
            return all([await status_of(city, f"/fhir/{p}") == 200 for p in (
                "Observation/township-1.after", "Observation/township-1.inbound-ok",
                "Patient/township-1.p1")])

        await eventually(settled)
        for oid in ("nul1", "nul2", "nul3", "nul4", "nul5", "tx-ok"):
            assert await status_of(city, f"/fhir/Observation/township-1.{oid}") == 404

        async def journaled() -> bool:
            with hub.store.connect() as conn:
                subjects = set(conn.execute(sa.select(journal.c.subject)).scalars())
            return {"Observation/after", "Observation/inbound-ok"} <= subjects

        await eventually(journaled)
        with hub.store.connect() as conn:
            subjects = set(conn.execute(sa.select(journal.c.subject)).scalars())
        assert not {s for s in subjects if s.startswith("Observation/nul")}
        assert "Observation/tx-ok" not in subjects
        dead = [d for d in await read_deadletters(settings, 50) if d["stage"] == "ingest"]
        assert [d["reason"].split(":")[0] for d in dead] == ["invalid-resource"]
        assert "Observation.note[0].text" in dead[0]["outcome"]

        # Item 8d: every numeric parameter bounded, on both backends: 400, never 503.
        for path, name in (("/fhir/Observation", "_offset"), ("/fhir/Observation", "_count"),
                           ("/fhir/AuditEvent?patient=township-1.p1", "_offset"),
                           ("/fhir/AuditEvent?patient=township-1.p1", "_count"),
                           ("/fhir/Observation?category=laboratory", "_offset"),
                           ("/mpi/reviews", "_count")):
            for value in ("9223372036854775808", "-1", "abc", "1e3", "99999999999"):
                sep = "&" if "?" in path else "?"
                r = await city.get(f"{path}{sep}{name}={value}")
                assert r.status_code == 400, (path, name, value, r.text)
                assert r.json()["resourceType"] == "OperationOutcome"
                assert name in r.json()["issue"][0]["diagnostics"], r.text
        assert (await city.get("/fhir/Observation?_offset=10000000")).status_code == 200
        for query in ("date=9999-12-31", "date=gt9999-12-31T23:59:59.999999Z",
                      "date=0001-01-01"):
            r = await city.get(f"/fhir/Observation?patient=township-1.p1&{query}")
            assert r.status_code == 400 and "date" in r.text, (query, r.text)
        r = await city.get("/imaging/turnaround?by=centre&since=yesterday")
        assert r.status_code == 400 and "since" in r.text
        for minutes in (-5, 0, 10**9, "soon"):
            r = await city.post("/imaging/studies/township-1.none/claim",
                                json={"reader": "甲", "minutes": minutes})
            assert r.status_code == 400 and "minutes" in r.text, (minutes, r.text)
        # NUL and over-long values in the URL reach no store either.
        assert (await city.get("/fhir/Observation?patient=township-1.p%001")).status_code == 400
        assert (await city.get("/fhir/Observation/township-1.o%001")).status_code == 400
        long_key = "township-1." + "x" * 300
        r = await city.get(f"/fhir/Observation?patient=Patient/{long_key}")
        assert r.status_code == 200, r.text
        r = await t1.put("/fhir/Observation/long", json={
            **observation("long"), "subject": {"reference": f"Patient/{'x' * 65}"}})
        assert r.status_code == 422 and "Observation.subject.reference" in r.text

        # Item 8c: requests refused with 401 are in the audit trail.
        async with httpx.AsyncClient(base_url=base) as anonymous:
            assert (await anonymous.get("/fhir/Patient/township-1.p1")).status_code == 401
            r = await anonymous.get("/fhir/Observation", params={"patient": "township-1.p1"},
                                    headers=auth("not-a-real-token"))
            assert r.status_code == 401
            r = await anonymous.get("/fhir/Observation/township-1.after",
                                    headers={"Authorization": "Basic abc"})
            assert r.status_code == 401
            r = await anonymous.put("/fhir/Observation/x", json=observation("x"),
                                    headers=auth("not-a-real-token"))
            assert r.status_code == 401
        trail = (await city.get("/fhir/AuditEvent",
                                params={"patient": "township-1.p1", "_count": 500})).json()
        refused = [e["resource"] for e in trail["entry"]
                   if e["resource"]["agent"][0]["who"]["identifier"]["system"]
                   == f"urn:hie:{UNAUTHENTICATED}"]
        agents = {(e["agent"][0]["who"]["identifier"]["value"], e["subtype"][0]["code"],
                   e["outcome"]) for e in refused}
        assert ("anonymous", "read", "4") in agents  # Patient/township-1.p1
        assert any(a.startswith("token-sha256:") and i == "search-type" for a, i, _ in agents)
        assert len(refused) == 3  # the read of an Observation of p1 names p1 too
        with hub.store.connect() as conn:
            rows = conn.execute(sa.select(audit).where(
                audit.c.agent_kind == UNAUTHENTICATED)).mappings().all()
        assert {r["interaction"] for r in rows} >= {"read", "search-type", "update"}
        assert not any("not-a-real-token" in str(dict(r)) for r in rows)


# -- scopes, metrics, media types, ids ---------------------------------------------------

def _consortium_with_lab_app(tmp_path):
    c = read_consortium(None)
    c.apps.append(App("lab-app", "化验看板", LAB_APP, frozenset({"lab"}), frozenset({"*"})))
    path = tmp_path / "consortium.yaml"
    write_consortium(c, path)
    return path


async def test_scopes_metrics_media_types_and_foreign_ids(make_settings, tmp_path):
    settings = make_settings(facilities_file=_consortium_with_lab_app(tmp_path))
    async with running_hub(settings) as (_, base), \
            httpx.AsyncClient(base_url=base, headers=auth(T1)) as t1, \
            httpx.AsyncClient(base_url=base, headers=auth(CITY)) as city, \
            httpx.AsyncClient(base_url=base, headers=auth(DASHBOARD)) as dashboard, \
            httpx.AsyncClient(base_url=base, headers=auth(LAB_APP)) as lab_app, \
            httpx.AsyncClient(base_url=base, headers=auth(MONITOR)) as monitor, \
            httpx.AsyncClient(base_url=base) as anonymous:
        json_body = orjson.dumps(observation("o1"))

        # Item 8e: only FHIR JSON at the gateway.
        for headers in ({}, {"Content-Type": "text/plain"},
                        {"Content-Type": "application/x-www-form-urlencoded"},
                        {"Content-Type": "application/fhir+json; charset=iso-8859-1"}):
            r = await t1.put("/fhir/Observation/o1", content=json_body, headers=headers)
            assert r.status_code == 415, (headers, r.text)
            assert r.json()["issue"][0]["code"] == "not-supported"
            r = await t1.post("/fhir/Observation", content=json_body, headers=headers)
            assert r.status_code == 415, headers
            r = await t1.post("/fhir", content=orjson.dumps(bundle("batch", patient("p1"))),
                              headers=headers)
            assert r.status_code == 415, headers
        for ctype in ("application/fhir+json", "application/json; charset=utf-8",
                      "Application/FHIR+JSON;charset=UTF-8", "application/fhir+json; "
                      "fhirVersion=4.3"):
            r = await t1.put("/fhir/Observation/o1", content=json_body,
                             headers={"Content-Type": ctype})
            assert r.status_code == 201, (ctype, r.text)
        r = await t1.post("/fhir", json=bundle("batch", patient("p1")))
        assert r.status_code == 200

        # Item 8f: nobody writes another facility's resource.
        foreign = observation("township-2.obs-1")
        r = await t1.put("/fhir/Observation/township-2.obs-1", json=foreign)
        assert r.status_code == 403 and "township-2" in r.text, r.text
        r = await t1.put("/fhir/Observation/township-2.obs-1",
                         json={k: v for k, v in foreign.items() if k != "id"})
        assert r.status_code == 403
        r = await t1.put("/fhir/Observation/township-1.township-2.obs-1", json=foreign)
        assert r.status_code == 403
        r = await t1.post("/fhir", json=bundle("batch", foreign, observation("own")))
        assert [e["response"]["status"] for e in r.json()["entry"]] == [
            "403 Forbidden", "201 Created"]
        assert (await t1.delete("/fhir/Observation/township-2.obs-1")).status_code == 403
        r = await t1.put("/fhir/Observation/township-1.obs-9", json=observation("obs-9"))
        assert r.status_code == 201 and r.headers["Location"] == \
            "/fhir/Observation/township-1.obs-9"

        async def visible() -> bool:
            return all([await status_of(city, p) == 200 for p in (
                "/fhir/Observation/township-1.obs-9", "/fhir/Observation/township-1.own",
                "/fhir/Patient/township-1.p1", "/fhir/Observation/township-1.o1")])

        await eventually(visible)
        read = await city.get("/fhir/Observation/township-1.obs-9")
        assert read.json()["id"] == "township-1.obs-9"  # the id it answered with
        for gone in ("township-1.township-2.obs-1", "township-2.obs-1"):
            assert await status_of(city, f"/fhir/Observation/{gone}") == 404

        # Item 8a: every endpoint checks the scope of the projection it reads.
        patient_key = "township-1.p1"
        not_shared_record = [
            ("GET", "/recognition/statistics", None),
            ("GET", "/recognition/statistics.csv", None),
            ("POST", "/recognition/$check", {"patient": f"Patient/{patient_key}",
                                             "items": ["GLU"]}),
            ("GET", "/imaging/turnaround?by=centre", None),
            ("GET", f"/imaging/history?patient={patient_key}", None),
            ("GET", "/imaging/worklist", None),
            ("GET", f"/fhir/Patient/{patient_key}/$lab-summary", None),
            ("GET", f"/fhir/DiagnosticReport?patient={patient_key}&category=imaging", None),
            ("GET", f"/fhir/Observation?patient={patient_key}&category=laboratory", None),
            ("GET", "/mpi/reviews", None),
            ("GET", f"/mpi/records/{patient_key}", None),
            ("GET", "/referrals/incoming", None),
            ("GET", "/referrals/outgoing", None),
            ("GET", "/referrals/statistics", None),
            ("GET", "/referrals/township-1.sr-1", None),
            ("GET", "/referrals/township-1.sr-1/package", None),
            ("POST", "/referrals/township-1.sr-1/accept", {}),
        ]
        for method, path, body in not_shared_record:
            r = await dashboard.request(method, path, json=body)
            assert r.status_code == 403, (path, r.text)
            assert r.json()["issue"][0]["code"] == "forbidden"
        assert (await dashboard.get(f"/fhir/Observation?patient={patient_key}")
                ).status_code == 200
        assert (await dashboard.get("/fhir/Observation/township-1.o1")).status_code == 200
        for path in ("/fhir/Observation/township-1.o1", f"/fhir/Observation?patient="
                     f"{patient_key}", "/recognition/statistics", "/imaging/turnaround"):
            assert (await lab_app.get(path)).status_code == 403, path
        r = await lab_app.get(f"/fhir/Observation?patient={patient_key}&category=laboratory")
        assert r.status_code == 200, r.text
        assert (await lab_app.get(f"/fhir/Patient/{patient_key}/$lab-summary")
                ).status_code in (200, 404)
        for path in ("/recognition/statistics", "/recognition/statistics.csv",
                     "/imaging/turnaround?by=centre"):
            assert (await city.get(path)).status_code == 200, path  # members read them
            assert (await monitor.get(path)).status_code == 403, path

        # Item 8b: /metrics needs an app token with the metrics scope.
        assert (await anonymous.get("/metrics")).status_code == 401
        for who in (t1, city, dashboard, lab_app):
            r = await who.get("/metrics")
            assert r.status_code == 403 and "metrics" in r.text, r.text
        r = await monitor.get("/metrics")
        assert r.status_code == 200 and "hub_events_accepted_total" in r.text
        assert (await monitor.get("/fhir/Observation")).status_code == 403
