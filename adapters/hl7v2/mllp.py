"""An MLLP listener: what an existing LIS connects to, unchanged.

MLLP frames each message as ``<VT> message <FS><CR>``; the listener answers every frame with
an ACK in the same framing, on the same connection, in order. Framing is read here rather
than by python-hl7's stream reader, which decodes with one fixed encoding: the charset can
only be known per message (MSH-18, or by trying UTF-8 and then GB18030).
"""

from __future__ import annotations

import asyncio
import logging

from adapters.hl7v2.codec import END, START, ack, frame
from adapters.hl7v2.intake import Hl7Intake

log = logging.getLogger(__name__)
MAX_MESSAGE = 8 * 1024 * 1024


class MllpServer:
    def __init__(self, intake: Hl7Intake, host: str = "0.0.0.0", port: int = 2575) -> None:
        self.intake = intake
        self.host = host
        self.port = port
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task] = set()
        self._busy = 0  # messages being handled: taken, not yet answered
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, self.host, self.port,
                                                  limit=MAX_MESSAGE)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self, timeout: float = 30.0) -> None:
        """Take no new connection, answer the messages already taken (for at most
        ``timeout`` s: a message cut off before its ACK is simply sent again by the LIS),
        then close the connections."""
        if self._server is not None:
            self._server.close()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("MLLP: %d messages still unanswered after %g s; closing", self._busy,
                        timeout)
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        peer = writer.get_extra_info("peername")
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                try:
                    data = await reader.readuntil(END)
                except asyncio.IncompleteReadError as exc:
                    if exc.partial.strip():  # the peer hung up inside a frame
                        log.warning("MLLP %s: connection closed inside a message", peer)
                    return
                except asyncio.LimitOverrunError:
                    writer.write(frame(ack("", "AR", f"message over {MAX_MESSAGE} bytes")))
                    await writer.drain()
                    return
                start = data.find(START)
                payload = data[start + 1 if start >= 0 else 0:-len(END)]
                self._busy += 1
                self._idle.clear()
                try:
                    reply, code, reason = await self.intake.handle(payload)
                    if code != "AA":
                        log.info("MLLP %s: %s %s", peer, code, reason)
                    writer.write(frame(reply))
                    await writer.drain()
                finally:
                    self._busy -= 1
                    if not self._busy:
                        self._idle.set()
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            self._connections.discard(task)
            writer.close()
