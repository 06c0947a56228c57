"""Who sees which console page and whose traffic: pure rules over the API's principals.

The console adds no rights of its own. A page showing a projection needs the scope its API
route needs; dead letters follow :func:`hub.access.rules.dead_letter_facilities`. Traffic
(events accepted and refused, event lookup) is a facility's own for a facility's login,
the named facilities' for an app, and everyone's for a **consortium operator**: an app
whose entry names the ``deadletters`` scope and every facility (``'*'``), as the demo's
``consortium-ops`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

from hub.access.rules import (
    ALL,
    DEADLETTERS,
    Principal,
    dead_letter_facilities,
    may_read_projection,
)


def is_operator(p: Principal) -> bool:
    return p.kind == "app" and ALL in p.facilities and DEADLETTERS in p.projections


def traffic_facilities(p: Principal) -> frozenset[str] | None:
    """Whose events ``p`` sees counted and looked up: None for everyone's."""
    if is_operator(p):
        return None
    if p.kind == "facility":
        return frozenset({p.id})
    return None if ALL in p.facilities else p.facilities


@dataclass(frozen=True, slots=True)
class Page:
    path: str
    title: str
    scope: str | None  # the projection its API reads; None: any login


PAGES = (
    Page("/console", "Overview", None),
    Page("/console/deadletters", "Dead letters", DEADLETTERS),
    Page("/console/events", "Event lookup", None),
    Page("/console/recognition", "Recognition", "recognition"),
    Page("/console/reading", "Reading", "imaging"),
    Page("/console/referrals", "Referral", "referral"),
    Page("/console/monitoring", "Monitoring", "monitoring"),
    Page("/console/registry", "Registry", None),
)


def may_see(p: Principal, page: Page) -> bool:
    if page.scope is None:
        return True
    if page.scope == DEADLETTERS:
        visible = dead_letter_facilities(p)
        return visible is None or bool(visible)
    return may_read_projection(p, page.scope)


def visible_pages(p: Principal) -> list[Page]:
    return [page for page in PAGES if may_see(p, page)]
