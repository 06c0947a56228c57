"""Projection engine: pure projections, the runner that feeds them, rebuilds, dead letters."""
