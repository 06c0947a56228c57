"""``python -m hub.cli``: the same command as the ``hub`` script."""

from hub.cli import app

app()
