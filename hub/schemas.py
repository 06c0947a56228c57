"""Where the contract files (``schemas/``) are: the source checkout's folder, or the copy a
wheel installs under ``<prefix>/share/hie-hub/schemas`` (pyproject ``data-files``)."""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

from hub.errors import ConfigError


@cache
def schemas_dir() -> Path:
    for candidate in (Path(__file__).resolve().parents[1] / "schemas",
                      Path(sys.prefix) / "share" / "hie-hub" / "schemas"):
        if (candidate / "envelope.schema.json").is_file():
            return candidate
    raise ConfigError("the hub's schemas/ folder is missing: reinstall the hub "
                      "(pip install .) from a complete source tree")


def schema_file(name: str) -> Path:
    return schemas_dir() / name
