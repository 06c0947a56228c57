"""Master patient index quality: link a noisy generated population and score the persons.

``python -m bench.mpi_quality [--persons N] [--seed S]``: exits 1 unless pairwise precision
is at least 0.99 and recall at least 0.95.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

from hub.demo.noisy_population import evaluate, generate

PRECISION_TARGET = 0.99
RECALL_TARGET = 0.95
# Fixed, so runs compare; the hub's real secret never leaves its configuration.
BENCH_SECRET = b"mpi-quality-bench"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    console = Console()
    with console.status(f"generating {args.persons:,} residents"):
        records = generate(args.persons, args.seed)
    with console.status(f"matching {len(records):,} records"):
        q = evaluate(records, BENCH_SECRET)

    passed = q.precision >= PRECISION_TARGET and q.recall >= RECALL_TARGET
    table = Table(title=f"MPI quality: {args.persons:,} residents, seed {args.seed}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("", justify="center")

    def verdict(ok: bool) -> str:
        return "[green]PASS[/]" if ok else "[red]FAIL[/]"

    table.add_row("records", f"{q.records:,}", "", "")
    table.add_row("true same-resident pairs", f"{q.pairs:,}", "", "")
    table.add_row("precision", f"{q.precision:.5f}", f"≥ {PRECISION_TARGET}",
                  verdict(q.precision >= PRECISION_TARGET))
    table.add_row("recall", f"{q.recall:.5f}", f"≥ {RECALL_TARGET}",
                  verdict(q.recall >= RECALL_TARGET))
    table.add_row("reviews opened", f"{q.reviews:,}", "", "")
    table.add_row("conflicts flagged", f"{q.conflicts:,}", "", "")
    table.add_row("records/s", f"{q.records_per_second:,.0f}", "", "")
    console.print(table)
    console.print(verdict(passed))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
