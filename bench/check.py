"""``hub bench --check``: a run's ratios against the stored baseline (``bench/baseline.json``).

Every ratio the bench prints (hub figure / baseline measured in the same run) is kept by its
figure name; the baseline file holds, per figure name, the ratio measured over a few runs
and the noise band seen between them. A figure regressed when its ratio moved the wrong way
(down for rates, up for latencies and memory: ``better``) by more than its band. Figures the
run did not measure (``--only``) and figures the baseline does not know are not judged, so
other measurements (``--peers``) add their ratios by name. Not for CI: it times things.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.table import Table

BASELINE = Path(__file__).with_name("baseline.json")
_RATIO = re.compile(r"^\s*(\d+(?:\.\d+)?)x")
# Units of the hub column for which less is better; every other ratio is a rate.
_LOWER_IS_BETTER = (" ms", " s", " MB")


class RatioTable(Table):
    """A rich table that also keeps each row's ratio, by figure name, for ``--check``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ratios: dict[str, float] = {}
        self.better: dict[str, str] = {}

    def add_row(self, *cells: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super().add_row(*cells, **kwargs)
        if len(cells) >= 4 and isinstance(cells[3], str) and (m := _RATIO.match(cells[3])):
            name = str(cells[0]).strip()
            self.ratios[name] = float(m[1])
            lower = str(cells[1]).rstrip().endswith(_LOWER_IS_BETTER)
            self.better[name] = "lower" if lower else "higher"


def regressions(measured: Mapping[str, float], baseline: Mapping[str, Mapping[str, Any]]
                ) -> list[str]:
    """One line per figure whose ratio moved the wrong way by more than its band."""
    out = []
    for name, got in measured.items():
        base = baseline.get(name)
        if base is None:
            continue
        ratio, band = float(base["ratio"]), float(base["band"])
        worse = ratio - got if base.get("better", "higher") == "higher" else got - ratio
        if worse > band:
            direction = "fell" if base.get("better", "higher") == "higher" else "rose"
            out.append(f"{name}: ratio {got:.2f}x {direction} from {ratio:.2f}x by "
                       f"{worse:.2f}, more than its noise band ±{band:.2f}")
    return out


def load_baseline(path: Path = BASELINE) -> dict[str, dict[str, Any]]:
    """The figures of a baseline file; ValueError with one sentence if it is unusable."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"no baseline file at {path}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"baseline {path} is not JSON: {exc}") from None
    figures = doc.get("figures") if isinstance(doc, dict) else None
    if not isinstance(figures, dict) or not all(
            isinstance(f, dict) and "ratio" in f and "band" in f for f in figures.values()):
        raise ValueError(f"baseline {path} has no figures with a ratio and a band each")
    return figures
