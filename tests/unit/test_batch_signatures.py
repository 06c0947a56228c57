"""One signature per manifest: each member verifies on its own, a tampered member alone is
refused, and nobody's manifest passes for another facility's."""

import dataclasses

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.sdk import build_envelopes
from hub.envelope import Envelope, new_event
from hub.errors import AuthError
from hub.ingest.bundle import plan_body
from hub.registry.consortium_file import load_directory
from hub.signing import (
    MAX_BATCH,
    Signer,
    Verifier,
    demo_private_key,
    demo_signer,
    event_digest,
    manifest_root,
    manifest_tree,
    parse_signature,
    signature_valid,
    use_hub_signer,
)
from tests.support.resources import bundle, patient

directory = load_directory(None)
village = demo_signer("village-1")


def events(n: int, facility: str = "village-1") -> list[Envelope]:
    return [new_event(facility, "Patient", f"p{i}", f"{facility}.p{i}", b'{"n":%d}' % i)
            for i in range(n)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=70))
def test_every_member_climbs_to_the_root_and_no_other_place_does(digests):
    root, paths = manifest_tree(digests)
    n = len(digests)
    for i, (d, path) in enumerate(zip(digests, paths, strict=True)):
        assert manifest_root(d, i, n, b"".join(path)) == root
        # a digest that is not this member's climbs elsewhere
        assert manifest_root(bytes(32 - len(d)) + bytes(b ^ 1 for b in d), i, n,
                             b"".join(path)) != root
    if n > 1:
        path = b"".join(paths[0])
        assert manifest_root(digests[0], 0, n, path + bytes(32)) is None  # too long
        assert manifest_root(digests[0], 0, n, path[:-1]) is None          # too short


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=2, max_value=40), st.data())
def test_each_member_verifies_alone_and_a_tampered_one_is_refused_alone(n, data):
    signed = village.sign_batch(events(n))
    assert {parse_signature(e.signature).count for e in signed} == {n}
    bad = data.draw(st.integers(min_value=0, max_value=n - 1))
    field = data.draw(st.sampled_from(["data", "key", "subject", "id", "time"]))
    tampered = dataclasses.replace(signed[bad], **{field: getattr(signed[bad], field) + "x"
                                                   if field != "data" else b'{"n":-1}'})
    fresh = load_directory(None)  # a verifier that has seen nothing of this batch
    for checked_first in (False, True):  # before and after its manifest was checked
        if checked_first:
            assert fresh.verify(signed[(bad + 1) % n]) == "village-1#1"
        with pytest.raises(AuthError) as caught:
            fresh.verify(tampered)
        assert caught.value.reason == "bad-signature"
    for e in signed:  # the others, after it, in a directory that just refused one
        assert fresh.verify(e) == "village-1#1"
    # any member alone, later, with nothing remembered
    one = data.draw(st.sampled_from(signed))
    assert load_directory(None).verify(one) == "village-1#1"
    assert signature_valid(demo_private_key("village-1").public_key(), one,
                           parse_signature(one.signature))


def test_a_lone_event_keeps_the_one_event_form_and_old_signatures_still_verify():
    (one,) = village.sign_batch(events(1))
    assert one.signature.startswith("ed25519;kid=village-1#1;sig=")
    assert directory.verify(one) == "village-1#1"
    old = village.sign(events(1)[0])  # what every SDK before manifests sends
    assert directory.verify(old) == "village-1#1"


def test_nobody_signs_a_manifest_for_another_facility():
    # village-2's key under its own key id, for village-1's events: source-mismatch
    with pytest.raises(AuthError) as caught:
        directory.verify(demo_signer("village-2").sign_batch(events(3))[1])
    assert caught.value.reason == "source-mismatch"
    # village-2's key under village-1's key id: the manifest signature does not verify
    forged = Signer("village-1#1", demo_private_key("village-2")).sign_batch(events(3))
    for e in forged:
        with pytest.raises(AuthError) as caught:
            directory.verify(e)
        assert caught.value.reason == "bad-signature"
    # a member moved into another manifest (its path and signature with another's data)
    a, b = village.sign_batch(events(2)), village.sign_batch(events(2, "village-1")[::-1])
    with pytest.raises(AuthError):
        directory.verify(dataclasses.replace(a[0], signature=b[0].signature))


def test_a_manifest_signature_is_not_an_event_signature():
    """The key signs manifests and events under different prefixes: neither passes for the
    other, whatever an attacker copies between headers."""
    e = events(2)
    signed = village.sign_batch(e)
    sig = parse_signature(signed[0].signature).sig
    from hub.signing import SCHEME, _b64
    as_event = dataclasses.replace(e[0], signature=f"{SCHEME};kid=village-1#1;sig={_b64(sig)}")
    with pytest.raises(AuthError, match="bad signature"):
        directory.verify(as_event)


@pytest.mark.parametrize("header", [
    "ed25519-batch;kid=village-1#1;n=3;i=3;path=;sig=AA",      # no such member
    "ed25519-batch;kid=village-1#1;n=1;i=0;path=;sig=AA",      # a manifest of one
    f"ed25519-batch;kid=village-1#1;n={MAX_BATCH + 1};i=0;path=;sig=AA",
    "ed25519-batch;kid=village-1#1;n=x;i=0;path=;sig=AA",
    "ed25519-batch;kid=village-1#1;n=2;sig=AA",                # no path, no place
])
def test_malformed_manifest_headers_are_unsigned(header):
    with pytest.raises(AuthError) as caught:
        directory.verify(dataclasses.replace(events(1)[0], signature=header))
    assert caught.value.reason == "unsigned"


def test_a_verifier_checks_each_manifest_once_and_remembers_only_successes():
    calls = []

    class Counting:
        def __init__(self, key):
            self.key = key

        def verify(self, sig, message):
            calls.append(message)
            return self.key.verify(sig, message)

    public = Counting(demo_private_key("village-1").public_key())
    verifier = Verifier()
    signed = village.sign_batch(events(50))
    bad = dataclasses.replace(signed[7], data=b"{}")
    for _ in range(3):  # refused each time, never remembered
        assert not verifier.valid(public, bad, parse_signature(bad.signature))
    assert all(verifier.valid(public, e, parse_signature(e.signature)) for e in signed)
    assert len(calls) == 4  # three refusals, then one check for fifty members
    assert event_digest(signed[0]) != event_digest(bad)


def test_the_gateway_signs_a_bundle_under_one_manifest():
    use_hub_signer(demo_signer("hub"))
    body = orjson.dumps(bundle("batch", *(patient(f"p{i}", f"MRN{i}") for i in range(5))))
    plan = plan_body(directory.get("township-1"), body, directory).plan
    sigs = [parse_signature(p.envelope.signature) for p in plan.entries]
    assert {s.count for s in sigs} == {5} and len({s.sig for s in sigs}) == 1
    hub_key = demo_private_key("hub").public_key()
    assert all(signature_valid(hub_key, p.envelope, s)
               for p, s in zip(plan.entries, sigs, strict=True))


def test_the_sdk_signs_publish_many_under_one_manifest():
    envs = build_envelopes(village, [patient(f"p{i}") for i in range(4)])
    assert len({parse_signature(e.signature).sig for e in envs}) == 1
    assert all(directory.verify(e) == "village-1#1" for e in envs)


def _with_path(env: Envelope, path: bytes) -> Envelope:
    """``env`` whose header carries ``path`` instead of its own."""
    head, _, rest = env.signature.partition(";path=")
    sig = rest.partition(";sig=")[2]
    import base64
    text = base64.urlsafe_b64encode(path).decode().rstrip("=")
    return dataclasses.replace(env, signature=f"{head};path={text};sig={sig}")


@settings(max_examples=80, deadline=None)
@given(st.integers(min_value=2, max_value=37), st.data())
def test_a_remembering_verifier_answers_as_a_check_from_scratch(n, data):
    """Members arrive in any order, some forged (another member's data, a path with one
    step changed, cut short or lengthened); the verifier that remembers the tree's nodes
    must give each the answer a stateless check gives."""
    signed = village.sign_batch(events(n))
    public = demo_private_key("village-1").public_key()
    verifier = Verifier()
    picks = data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 5)),
                               min_size=1, max_size=3 * n))
    for index, how in picks:
        env = signed[index]
        path = parse_signature(env.signature).path
        if how == 1:  # another member's content under this member's place
            env = dataclasses.replace(env, data=signed[(index + 1) % n].data)
        elif how == 2 and path:  # one step of the path changed
            step = data.draw(st.integers(0, len(path) // 32 - 1)) * 32
            env = _with_path(env, path[:step] + bytes(b ^ 0xFF for b in path[step:step + 32])
                             + path[step + 32:])
        elif how == 3 and path:
            env = _with_path(env, path[:-32])
        elif how == 4:
            env = _with_path(env, path + path[:32])
        signature = parse_signature(env.signature)
        assert verifier.valid(public, env, signature) == signature_valid(public, env,
                                                                         signature), how
