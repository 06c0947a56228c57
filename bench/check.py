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
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

BASELINE = Path(__file__).with_name("baseline.json")
_RATIO = re.compile(r"^\s*(\d+(?:\.\d+)?)x")
# Units of the hub column for which less is better; every other ratio is a rate.
_LOWER_IS_BETTER = (" ms", " s", " MB", " µs/ev")


class RatioTable(Table):
    """A rich table that also keeps each row's ratio, by figure name, for ``--check``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ratios: dict[str, float] = {}
        self.better: dict[str, str] = {}
        self.cells: list[list[str]] = []  # every row as printed (markup removed): --save

    def add_row(self, *cells: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super().add_row(*cells, **kwargs)
        self.cells.append([_plain(c) for c in cells])
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


def _plain(cell: Any) -> str:
    return re.sub(r"\[/?(?:green|red|yellow|bold)\]", "", str(cell)).strip()


def run_record(table: RatioTable, about: str) -> dict[str, Any]:
    """What ``hub bench --save`` writes: one run's ratios by figure name, and every row as
    printed (the README's table is made from these)."""
    return {"about": about, "ratios": dict(table.ratios), "better": dict(table.better),
            "rows": table.cells}


# The least band a figure gets: one or two runs cannot show a ratio's tails on a shared
# machine (the README's ranges moved by ±0.03 quiet, far more under load).
MIN_BAND = 0.05
MIN_RELATIVE_BAND = 0.12


def baseline_from_runs(runs: Sequence[Mapping[str, Any]], about: str) -> dict[str, Any]:
    """A baseline from saved runs: per figure the median ratio, and a band of the spread
    the runs showed, at least ``MIN_BAND`` and ``MIN_RELATIVE_BAND`` of the ratio."""
    seen: dict[str, list[float]] = {}
    better: dict[str, str] = {}
    for run in runs:
        for name, ratio in run["ratios"].items():
            seen.setdefault(name, []).append(float(ratio))
            better[name] = run.get("better", {}).get(name, "higher")
    figures = {}
    for name, ratios in sorted(seen.items()):
        middle = statistics.median(ratios)
        band = max(max(ratios) - min(ratios), MIN_BAND, MIN_RELATIVE_BAND * middle)
        figures[name] = {"ratio": round(middle, 2), "band": round(band, 2),
                         "better": better[name], "runs": ratios}
    return {"about": about, "figures": figures}


def updated(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Baseline ``old`` with every figure ``new`` measured replaced by ``new``'s; the
    figures ``new`` did not measure (a partial run: ``--only``, ``--peers``) kept."""
    return {"about": f"{new['about']}; other figures: {old.get('about', '')}",
            "figures": {**old["figures"], **new["figures"]}}


USAGE = ("usage: python -m bench.check OUT.json RUN.json [RUN.json ...] [--over BASE.json] "
         "(runs saved by hub bench --save; --over: keep BASE's figures the runs did not "
         "measure)")


def main(argv: Sequence[str]) -> int:
    """``python -m bench.check OUT RUN [RUN ...] [--over BASE]``: write a baseline made from
    saved runs (with ``--over``, on top of an existing baseline)."""
    args = list(argv)
    over: str | None = None
    if "--over" in args:
        at = args.index("--over")
        if at + 1 >= len(args):
            print(USAGE, file=sys.stderr)
            return 2
        over = args.pop(at + 1)
        args.pop(at)
    if len(args) < 2:
        print(USAGE, file=sys.stderr)
        return 2
    out, *paths = args
    try:
        runs = [json.loads(Path(p).read_text()) for p in paths]
    except (OSError, json.JSONDecodeError) as exc:
        print(f"cannot read a saved run: {exc}", file=sys.stderr)
        return 2
    about = "; ".join(str(r.get("about", "")) for r in runs)
    made = baseline_from_runs(runs, about)
    measured = len(made["figures"])
    if over is not None:
        try:
            made = updated({"about": json.loads(Path(over).read_text()).get("about", ""),
                            "figures": load_baseline(Path(over))}, made)
        except (ValueError, OSError) as exc:
            print(f"cannot use {over}: {exc}", file=sys.stderr)
            return 2
    Path(out).write_text(json.dumps(made, indent=2) + "\n")
    print(f"wrote {out}: {sum(len(r['ratios']) for r in runs)} ratios from {len(runs)} run(s)"
          + (f", the other {len(made['figures']) - measured} figures kept from {over}"
             if over else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
