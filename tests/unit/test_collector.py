"""The collector stays out of a batch's checks (hub.collector): none runs while a batch is
checked, it runs again after, and a validation worker, which does only batch work,
collects on the batch schedule."""

from __future__ import annotations

import gc

import pytest

from hub.collector import YOUNG, paused
from hub.config import load_settings
from hub.ingest import verdict
from hub.ingest.checks import EdgeChecks
from hub.ingest.verdict import check_inbound_many
from hub.registry.consortium_file import load_directory
from tests.support.events import envelope
from tests.support.resources import observation


def test_no_collection_runs_while_a_batch_is_checked(monkeypatch):
    directory = load_directory(None)
    records = [(e.headers(), e.key.encode(), e.data, None)
               for e in (envelope(observation(f"o{i}")) for i in range(300))]
    seen, inside = [], []
    real = verdict._check_batch

    def watched(*args):
        inside.append(True)
        try:
            return real(*args)
        finally:
            inside.clear()

    monkeypatch.setattr(verdict, "_check_batch", watched)
    callback = lambda phase, info: seen.append(phase) if inside else None  # noqa: E731
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)  # CPython's default: 300 records would set it off often
    gc.callbacks.append(callback)
    try:
        assert all(v.facility for v in check_inbound_many(directory, records))
        assert seen == []
        assert gc.isenabled()  # and it runs again after
    finally:
        gc.callbacks.remove(callback)
        gc.set_threshold(*before)


def test_a_pause_restores_what_it_found_even_on_error():
    with pytest.raises(RuntimeError), paused():
        assert not gc.isenabled()
        raise RuntimeError
    assert gc.isenabled()
    gc.disable()
    try:
        with paused():
            pass
        assert not gc.isenabled()  # it was off: left off
    finally:
        gc.enable()


def test_a_validation_worker_collects_on_the_batch_schedule(tmp_path):
    settings = load_settings(data_dir=tmp_path, validation_workers=1)
    checks = EdgeChecks(settings, load_directory(None))
    try:
        assert checks._pool is not None
        assert checks._pool.submit(gc.get_threshold).result(timeout=60)[0] == YOUNG
    finally:
        checks.close()
