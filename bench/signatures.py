"""``hub bench --only signatures``: what provenance costs per event, beside validation.

Three ways to sign the same events, each measured here in µs per event on the same
envelopes (the simulated consortium's, ~1 kB each):

* one Ed25519 signature per event with ``cryptography`` (what the hub did before manifests,
  and still does for a lone event);
* the same with libsodium through PyNaCl, when it is installed (an optional extra: the hub
  does not depend on it);
* one signature per manifest of 100 events (``hub.signing``): each event is hashed and
  climbs the Merkle tree, and one Ed25519 signature covers the lot.

And whether ``cryptography``'s (and PyNaCl's) Ed25519 verification releases the GIL: two
threads verifying at once against one, on this 2-core machine (2.0x: released; 1.0x or
less: held, so worker threads would not help and only the validation worker processes do).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from hub.envelope import Envelope
from hub.signing import (
    Verifier,
    demo_private_key,
    demo_signer,
    parse_signature,
    signing_input,
)

Row = tuple[str, float, float]  # figure, µs per event, bare validation µs per resource


def _per_event(fn: Callable[[], Any], count: int, repeat: int = 3) -> float:
    """µs per event of ``fn`` (which handles ``count`` events), best of ``repeat``."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best / count * 1e6


def _threads_speedup(work: Callable[[int], None], count: int) -> float:
    """Throughput of two threads each doing ``count`` items over one thread doing them."""
    started = time.perf_counter()
    work(count)
    one = count / (time.perf_counter() - started)
    threads = [threading.Thread(target=work, args=(count,)) for _ in range(2)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return 2 * count / (time.perf_counter() - started) / one


def signature_costs(envs: list[Envelope], resources: list[dict]) -> tuple[list[Row], dict]:
    """Rows of (figure, µs per event, µs per validated resource) and the GIL speed-ups."""
    envs = [Envelope(e.id, e.source, e.type, e.subject, e.time, e.key, e.data)
            for e in envs]  # unsigned copies of the same events
    n = len(envs)
    validation = _per_event(lambda: [get_fhir_model_class(r["resourceType"]).model_validate(r)
                                     for r in resources], len(resources), repeat=1)
    signer = demo_signer("village-1")
    key = demo_private_key("village-1")
    public = key.public_key()
    inputs = [signing_input(e) for e in envs]
    sigs = [key.sign(m) for m in inputs]
    rows: list[Row] = [
        ("per event, cryptography: sign", _per_event(lambda: [key.sign(m) for m in inputs], n),
         validation),
        ("per event, cryptography: verify", _per_event(
            lambda: [public.verify(s, m) for s, m in zip(sigs, inputs, strict=True)], n),
         validation),
    ]
    speedups: dict[str, float] = {
        "cryptography": _threads_speedup(
            lambda k: [public.verify(sigs[0], inputs[0]) for _ in range(k)], 2000)}
    try:
        import nacl.signing  # optional: measured when installed
    except ImportError:
        nacl = None
    if nacl is not None:
        nkey = nacl.signing.SigningKey(key.private_bytes_raw())
        nverify = nkey.verify_key
        nsigs = [nkey.sign(m).signature for m in inputs]
        rows += [
            ("per event, PyNaCl (libsodium): sign", _per_event(
                lambda: [nkey.sign(m) for m in inputs], n), validation),
            ("per event, PyNaCl (libsodium): verify", _per_event(
                lambda: [nverify.verify(m, s) for s, m in zip(nsigs, inputs, strict=True)], n),
             validation),
        ]
        speedups["PyNaCl"] = _threads_speedup(
            lambda k: [nverify.verify(inputs[0], nsigs[0]) for _ in range(k)], 2000)

    def sign_manifests() -> list[Envelope]:
        return [s for i in range(0, n, 100) for s in signer.sign_batch(envs[i:i + 100])]

    signed = sign_manifests()

    def verify_manifests() -> None:
        verifier = Verifier()  # cold: every manifest's signature is checked once
        for e in signed:  # parsing the longer header counted too
            assert verifier.valid(public, e, parse_signature(e.signature))

    rows += [
        ("manifest of 100 (SHA-256 + Merkle path): sign", _per_event(sign_manifests, n),
         validation),
        ("manifest of 100 (SHA-256 + Merkle path): verify", _per_event(verify_manifests, n),
         validation),
    ]
    return rows, speedups
