"""Publishing from the API with the acknowledgement the deployment promises.

``ack_after=broker``: the broker acknowledged (acks=all). ``ack_after=journal`` (default with
the bundled broker, which keeps nothing on disk): the SQL journal has committed the events
too, so a 2xx never names an event a restart could lose. See ``hub.engine.acks``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import sqlalchemy as sa

from hub.api.deps import HubContext
from hub.engine.acks import publish_durably
from hub.envelope import Envelope
from hub.store.schema import applied


async def publish_acknowledged(ctx: HubContext, envelopes: Sequence[Envelope]) -> None:
    """Append ``envelopes`` to the events topic and return at the durable moment.

    Raises BrokerError if the broker did not acknowledge them within the publish timeout,
    NotAcknowledged (a BrokerError) if the journal did not commit them within
    ``ack_timeout_s`` after that. Either way the caller answers 503: not acknowledged, and
    a retry is safe (consumers drop duplicate event ids; a PUT replaces).
    """
    await publish_durably(ctx.publisher, ctx.settings.topics.events, envelopes, ctx.acks,
                          ctx.settings.ack_timeout_s)


async def applied_by(ctx: HubContext, projection: str, event_id: str,
                     timeout: float = 30.0) -> bool:
    """Wait until ``projection`` has applied the event (False after ``timeout`` seconds): an
    endpoint whose answer is decided by log order reads the projection only then."""
    def seen() -> bool:
        with ctx.store.connect() as conn:
            return conn.execute(sa.select(applied.c.event_id).where(
                applied.c.consumer == f"projection:{projection}",
                applied.c.event_id == event_id)).first() is not None

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await asyncio.to_thread(seen):
            return True
        await asyncio.sleep(0.05)
    return False
