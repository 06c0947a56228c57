"""Every hub process, and each validation worker it spawns, collects garbage on the batch
schedule (hub.collector): the CLI sets it, and a spawned worker, which runs no CLI, too."""

from __future__ import annotations

import gc

from typer.testing import CliRunner

from hub.cli import app
from hub.collector import YOUNG
from hub.config import load_settings
from hub.ingest.checks import EdgeChecks
from hub.registry.consortium_file import load_directory


def test_a_hub_command_sets_the_batch_schedule(monkeypatch):
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        result = CliRunner().invoke(app, ["facility", "list"])
        assert result.exit_code == 0, result.output
        assert gc.get_threshold() == (YOUNG, 10, 10)
    finally:
        gc.set_threshold(*before)


def test_a_validation_worker_sets_it_too(tmp_path):
    settings = load_settings(data_dir=tmp_path, validation_workers=1)
    checks = EdgeChecks(settings, load_directory(None))
    try:
        assert checks._pool is not None
        assert checks._pool.submit(gc.get_threshold).result(timeout=60)[0] == YOUNG
    finally:
        checks.close()
