"""The catalogue of projections the hub runs, by name."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from hub.activity.projection import ActivityProjection
from hub.config import Settings
from hub.engine.projection import Projection
from hub.imaging import projection as imaging
from hub.imaging.projection import ImagingProjection
from hub.journal import JournalProjection
from hub.lab.projection import FEED, FEED_TYPE, LabProjection
from hub.monitoring import projection as monitoring
from hub.monitoring.projection import MonitoringProjection
from hub.mpi.projection import MpiProjection
from hub.recognition.projection import RecognitionProjection
from hub.record.projection import SharedRecordProjection
from hub.referral.projection import ReferralProjection
from hub.registry.projection import RegistryProjection


def all_projections() -> dict[str, Projection]:
    return {p.name: p for p in (
        JournalProjection(), SharedRecordProjection(), ActivityProjection(),
        RegistryProjection(), MpiProjection(), LabProjection(), ImagingProjection(),
        RecognitionProjection(), ReferralProjection(), MonitoringProjection())}


def rebuildable() -> dict[str, Projection]:
    return {n: p for n, p in all_projections().items() if getattr(p, "rebuildable", True)}


# Projections with a change feed: (outbox table, topic, CloudEvents type) from the settings.
FEEDS: dict[str, Callable[[Settings], tuple[sa.Table, str, str]]] = {
    "lab": lambda s: (LabProjection().tables(sa.MetaData())[FEED], s.topics.lab, FEED_TYPE),
    "imaging": lambda s: (ImagingProjection().tables(sa.MetaData())[imaging.FEED],
                          s.topics.imaging, imaging.FEED_TYPE),
    "monitoring": lambda s: (MonitoringProjection().tables(sa.MetaData())[monitoring.FEED],
                             s.topics.alerts, monitoring.FEED_TYPE),
}
