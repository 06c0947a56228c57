"""The ``hub`` command. Thin: parses options, builds settings, calls into the hub.

One module per command group: ``run`` (the hub's processes), ``ops`` (operators' looks and
repairs), ``deadletters``, ``facility``, ``mpi``, ``recognition``, ``adapters``
(facility systems in) and ``apps`` (downstream apps out).
``common`` holds the options, the async runner and the one-line error handling they share.
"""

from __future__ import annotations

import typer

from hub.cli import adapters, deadletters, ops, run
from hub.cli.apps import apps_app
from hub.cli.common import HubGroup, one_line_summaries
from hub.cli.facility import facility_app
from hub.cli.mpi import mpi_app
from hub.cli.recognition import recognition_app

app = typer.Typer(cls=HubGroup, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Health-information exchange hub for a regional medical consortium.")
run.register(app)
ops.register(app)
# What was refused and why, from the store: works while no broker runs.
app.command("deadletters")(deadletters.deadletters)
app.add_typer(facility_app, name="facility")
app.add_typer(mpi_app, name="mpi")
app.add_typer(recognition_app, name="recognition")
# Facility systems in: listed after the hub's own commands in --help.
adapters.register(app)
# Downstream apps out, on the change feeds.
app.add_typer(apps_app, name="app")
one_line_summaries(app)

__all__ = ["app"]
