"""A resource about a patient belongs to that patient for good (``hub.record.owners``), on
every store backend."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from hub.record.owners import Claim, claim_patients


def test_the_first_claim_wins_and_a_refused_call_keeps_nothing(store):
    report = Claim("DiagnosticReport", "township-1.LAB1-abc", "township-1.P001")
    result = Claim("Observation", "township-1.LAB1-1-abc", "township-1.P001")
    assert claim_patients(store, [report, result]) == []
    assert claim_patients(store, [report, result]) == []  # the same message again
    other = result._replace(patient_key="township-1.P002")
    fresh = Claim("Observation", "township-1.LAB1-2-abc", "township-1.P002")
    (conflict,) = claim_patients(store, [fresh, other])
    assert conflict.claim == other and conflict.owner == "township-1.P001"
    # the refused call left no claim behind: its other resource is still free
    assert claim_patients(store, [fresh._replace(patient_key="township-1.P003")]) == []
    # the same id under another type is another resource
    assert claim_patients(store, [other._replace(resource_type="Specimen")]) == []


def test_two_listeners_racing_on_one_id_agree_on_its_owner(store):
    claims = [[Claim("Observation", f"township-1.R{i}", f"township-1.P{who}")
               for i in range(50)] for who in (1, 2)]
    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(lambda c: claim_patients(store, c), claims))
    # one call won every id, the other lost every id it asked for: never a mix
    assert sorted(len(o) for o in outcomes) == [0, 50]
    loser = outcomes.index(max(outcomes, key=len))
    winner = f"township-1.P{2 - loser}"
    assert {c.owner for c in outcomes[loser]} == {winner}
