"""The catalogue of projections the hub runs, by name."""

from __future__ import annotations

from hub.activity.projection import ActivityProjection
from hub.engine.projection import Projection
from hub.journal import JournalProjection
from hub.lab.projection import LabProjection
from hub.mpi.projection import MpiProjection
from hub.record.projection import SharedRecordProjection
from hub.registry.projection import RegistryProjection


def all_projections() -> dict[str, Projection]:
    return {p.name: p for p in (JournalProjection(), SharedRecordProjection(),
                                ActivityProjection(), RegistryProjection(),
                                        MpiProjection(), LabProjection())}


def rebuildable() -> dict[str, Projection]:
    return {n: p for n, p in all_projections().items() if getattr(p, "rebuildable", True)}
