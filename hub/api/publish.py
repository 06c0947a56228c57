"""Publishing from the API with the acknowledgement the deployment promises.

``ack_after=broker``: the broker acknowledged (acks=all). ``ack_after=journal`` (default with
the bundled broker, which keeps nothing on disk): the SQL journal has committed the events
too, so a 2xx never names an event a restart could lose. See ``hub.engine.acks``.
"""

from __future__ import annotations

from collections.abc import Sequence

from hub.api.deps import HubContext
from hub.envelope import Envelope
from hub.errors import NotAcknowledged


async def publish_acknowledged(ctx: HubContext, envelopes: Sequence[Envelope]) -> None:
    """Append ``envelopes`` to the events topic and return at the durable moment.

    Raises BrokerError if the broker did not acknowledge them within the publish timeout,
    NotAcknowledged (a BrokerError) if the journal did not commit them within
    ``ack_timeout_s`` after that. Either way the caller answers 503: not acknowledged, and
    a retry is safe (consumers drop duplicate event ids; a PUT replaces).
    """
    acks = ctx.acks
    ids = [e.id for e in envelopes]
    if acks is not None:
        acks.expect(ids)  # before publishing: the journal may commit before we resume
    try:
        await ctx.publisher.publish(ctx.settings.topics.events, envelopes)
    except BaseException:
        if acks is not None:
            acks.forget(ids)
        raise
    if acks is not None and not await acks.wait(ids, ctx.settings.ack_timeout_s):
        raise NotAcknowledged(
            f"the broker took {len(ids)} event(s) but the journal did not commit them within "
            f"{ctx.settings.ack_timeout_s:g} s")
