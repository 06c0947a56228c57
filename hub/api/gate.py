"""The API's door during a graceful stop: new requests are refused, those inside finish.

A request that has started (its events may be on their way to the journal) runs to its
answer; one that arrives after ``close()`` is answered 503 with ``Retry-After`` and
``Connection: close``, so a client retries later or on another replica. Health probes stay
answered (they say themselves whether the hub is ready).
"""

from __future__ import annotations

import asyncio

from hub.api.outcome import RETRY_AFTER, error

# Liveness must keep answering while the hub drains (a prober would otherwise kill it).
_ALWAYS_OPEN = ("/healthz", "/health")


class RequestGate:
    """Counts requests in progress; after ``close()`` refuses new ones."""

    def __init__(self) -> None:
        self.closed = False
        self.inside = 0
        self._empty = asyncio.Event()
        self._empty.set()

    def close(self) -> None:
        self.closed = True

    async def drained(self, timeout: float) -> bool:
        """Wait until no request is in progress; False if some still are after ``timeout``."""
        try:
            await asyncio.wait_for(self._empty.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def enter(self) -> None:
        self.inside += 1
        self._empty.clear()

    def leave(self) -> None:
        self.inside -= 1
        if self.inside == 0:
            self._empty.set()


class GateMiddleware:
    """ASGI middleware applying a RequestGate to every HTTP request."""

    def __init__(self, app, gate: RequestGate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.gate.closed and scope["path"] not in _ALWAYS_OPEN:
            refused = error(503, "the hub is stopping and takes no new requests; send this "
                            "again in a moment", "transient",
                            headers={**RETRY_AFTER, "Connection": "close"})
            await refused(scope, receive, send)
            return
        self.gate.enter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.gate.leave()
