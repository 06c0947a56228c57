"""A township clinic's notifier: an example downstream app on faststream's KafkaBroker.

It reads ``hie.referral.v1`` to learn which patients the clinic referred (from the start of
the topic at every start, without a consumer group: the fold lives in memory), and reads
``hie.lab.v1`` and ``hie.imaging.v1`` in the consumer groups ``notifier-<facility>-lab`` and
``-imaging`` (so a restart resumes where it stopped; one group per topic, as faststream runs a
consumer per subscriber, and two consumers of different topics in one group would only
rebalance each other). When a watched patient gets an abnormal result or a
report from another facility (``clinic.ClinicWatch``), it publishes a ``Notification`` to
``clinic.notifications.v1`` keyed by the clinic, and says it on the console. Run it with
``hub app notifier --facility township-1`` beside ``make demo``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from faststream.kafka import KafkaBroker

from adapters.apps.clinic import ClinicWatch, Notification
from adapters.apps.feeds import ImagingReport, LabChange, ReferralStep
from hub.config import Settings

NOTIFICATIONS = "clinic.notifications.v1"
log = logging.getLogger(__name__)


class Notifier:
    """One clinic's notifier: ``broker`` holds its subscribers and its publisher."""

    def __init__(self, settings: Settings, facility: str, topic: str = NOTIFICATIONS,
                 say: Callable[[str], None] = log.info) -> None:
        self.facility = facility
        self.watch = ClinicWatch(facility)
        self.say = say
        self.sent = 0
        t = settings.topics
        # faststream logs every message at INFO; the app says what matters itself.
        self.broker = broker = KafkaBroker(
            settings.bootstrap, client_id=f"notifier-{facility}", log_level=logging.DEBUG,
            description="The hub's Kafka, as the example notifier app reads it")
        group = f"notifier-{facility}"
        self.out = broker.publisher(topic, title="clinicNotifications", schema=Notification,
                                    description=" ".join((Notification.__doc__ or "").split()))

        @broker.subscriber(t.referral, auto_offset_reset="earliest",
                           title="notifierReferrals", description=(
                               "The notifier folds every referral step to know which "
                               "patients its clinic referred (read from the start, no group)."))
        async def on_referral(m: ReferralStep) -> None:
            started = self.watch.referral(m)
            if started is not None:
                self.say(f"{'watching' if started else 'no longer watching'} "
                         f"{m.patient_key} (referral {m.referral}, {m.state})")

        def results(topic: str, name: str, what: str):
            """A subscriber of a results feed, in a group of its own (see above)."""
            return broker.subscriber(topic, group_id=f"{group}-{name}",
                                     auto_offset_reset="earliest", title=f"notifier{name.title()}",
                                     description=f"{what} of watched patients (group "
                                                 f"notifier-<facility>-{name}).")

        @results(t.lab, "lab", "Abnormal results")
        async def on_lab(m: LabChange) -> None:
            await self.tell(self.watch.on_lab(m))

        @results(t.imaging, "imaging", "Imaging and ECG reports")
        async def on_report(m: ImagingReport) -> None:
            await self.tell(self.watch.on_report(m))

    async def tell(self, n: Notification | None) -> None:
        if n is None:
            return
        await self.out.publish(n, key=self.facility.encode(), headers={
            "ce_specversion": "1.0", "ce_id": n.id, "ce_source": "urn:hie:app:notifier",
            "ce_type": "hie.clinic.notification.v1", "content-type": "application/json"})
        self.sent += 1
        self.say(f"{self.facility}: {n.summary}")
