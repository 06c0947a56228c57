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
from hub.ingest.verdict import check_inbound_many
from hub.registry.consortium_file import load_directory
from hub.signing import (
    Verifier,
    demo_private_key,
    demo_signer,
    parse_signature,
    signing_input,
)

Row = tuple[str, float, float]  # figure, µs per event, bare validation µs per resource


def _per_event(fn: Callable[[], Any], count: int, repeat: int = 3) -> float:
    """CPU µs per event of ``fn`` (which handles ``count`` events), best of ``repeat``."""
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
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


def signature_costs(single: list[Envelope], batched: list[Envelope], resources: list[dict]
                    ) -> tuple[list[Row], dict]:
    """Rows of (figure, µs per event, µs per validated resource) and the GIL speed-ups.
    ``single`` and ``batched`` are the same events signed each on its own and under
    manifests of 100, as their facilities' systems would publish them."""
    envs = [Envelope(e.id, e.source, e.type, e.subject, e.time, e.key, e.data)
            for e in single]  # unsigned copies of the same events
    n = len(envs)
    validation = _per_event(lambda: [get_fhir_model_class(r["resourceType"]).model_validate(r)
                                     for r in resources], len(resources))
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
    rows += _stage_costs(single, batched, resources)
    return rows, speedups


def _stage_costs(single: list[Envelope], batched: list[Envelope], resources: list[dict]
                 ) -> list[Row]:
    """The ingest stage's CPU work per inbound record (reading the envelope, the signature,
    the hub's validation; no Kafka, no SQL) with each form, beside bare validation: the
    three measured in turns, best of five each, so a busy neighbour moves all three alike."""
    directory = load_directory(None)

    def stage(envs: list[Envelope]) -> Callable[[], None]:
        records = [(e.headers(), e.key.encode(), e.data, None) for e in envs]

        def run() -> None:
            directory.refresh(directory)  # nothing remembered from the previous turn
            # In batches of the stage's size (batch_max_records in `hub bench`), as it runs.
            for i in range(0, len(records), 2000):
                verdicts = check_inbound_many(directory, records[i:i + 2000])
                assert all(v.facility is not None for v in verdicts)
        return run

    def bare() -> None:
        for r in resources:
            get_fhir_model_class(r["resourceType"]).model_validate(r)

    work = {"one": stage(single), "batch": stage(batched), "bare": bare}
    best = dict.fromkeys(work, float("inf"))
    for _ in range(5):
        for name, fn in work.items():
            best[name] = min(best[name], _per_event(fn, len(resources), repeat=1))
    return [("ingest checks per record, each event signed", best["one"], best["bare"]),
            ("ingest checks per record, manifests of 100", best["batch"], best["bare"])]
