"""How the hub's batch work keeps Python's cyclic garbage collector out of its way.

The edge checks a batch step by step (``hub.fhir.validate_many``): thousands of parsed
records (dicts and lists) stay alive until the batch is done. With CPython's default
schedule (a young collection every 700 net allocations) such a batch outlives dozens of
young collections, is promoted to the old generations and is then traversed by full
collections together with everything the process loaded at start (hundreds of thousands
of objects: FHIR models, schemas, modules). Measured on the ingest stage with 2,000-record
batches: 1,262 young and 2-3 full collections for 20,000 records, 1.0-1.4 s of its 9-12 s.

Two remedies, each where it fits:

* ``paused()`` around one batch's checks: no collection runs while the batch is checked
  (the event loop is busy with it anyway); reference counting still frees what is not in a
  cycle at once, and the next collection after it finds the batch gone.
* ``tune_for_batches()`` in worker processes that do nothing but batch work (validation
  and rebuild workers): a young collection every 50,000 allocations. Not in a serving
  process: there a young collection of that size is a pause of a few milliseconds that a
  2 ms request (the recognition check) would feel at its 99th percentile.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG = 50_000  # allocations between young collections in a worker (CPython's default: 700)


def tune_for_batches() -> None:
    """Set a batch worker process's collector schedule (idempotent)."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG, middle, old)


def settle_for_batches() -> None:
    """For a process that does only batch work (``hub ingest``, ``hub project``), once it
    has started: what start-up loaded (modules, FHIR models, schemas) is frozen out of
    every later collection, and young collections come at the batch schedule."""
    gc.collect()
    gc.freeze()
    tune_for_batches()


@contextmanager
def paused() -> Iterator[None]:
    """No cyclic collection while one batch is checked (it was enabled: it is again)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
