"""Wiring: start what a hub process needs, in order, and stop it in reverse.

Order of start: bundled broker (embedded mode only) -> topics -> store -> facility directory
-> publisher. Components (API, ingest stage, projection runners) then run as asyncio tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import uvicorn

from hub.api.app import create_app
from hub.api.deps import HubContext
from hub.config import Settings
from hub.deadletters.archive import DeadLetterArchive
from hub.deadletters.keeper import DeadLetterKeeper
from hub.engine.acks import JournalAcks
from hub.engine.outage import TRANSIENT
from hub.engine.outbox import OutboxRelay
from hub.engine.projection import Event
from hub.engine.rebuild import ensure_built
from hub.engine.receipts import ReceiptSender
from hub.engine.runner import ProjectionRunner
from hub.errors import HubError
from hub.facilities import FacilityDirectory
from hub.identity import load_or_create_secret, use_identity_secret
from hub.ingest.checks import EdgeChecks
from hub.ingest.stage import IngestStage
from hub.log.broker import EmbeddedBroker
from hub.log.producer import Publisher
from hub.log.topics import durable_ack, ensure_topics
from hub.metrics import COMPONENT_RESTARTS
from hub.monitoring.intake import DeviceIntake
from hub.monitoring.service import Monitor
from hub.mpi.service import MpiService
from hub.projections import FEEDS, all_projections
from hub.recognition.catalogue import load_catalogue
from hub.recognition.prompter import Prompter
from hub.referral.feed import ReferralFeedRelay
from hub.referral.read import referral_policy
from hub.registry import care_sync
from hub.registry.care import CareRegistry
from hub.registry.consortium_file import Consortium, read_consortium
from hub.registry.sync import hub_record, mark_published, organization_event, pending
from hub.signing import Signer, load_or_create_hub_key, use_hub_signer
from hub.store import lease
from hub.store.db import Store, open_store
from hub.store.schema import recognition_outbox

log = logging.getLogger(__name__)
RESTART_FIRST_PAUSE = 1.0  # seconds before restarting a component that died; doubles
RESTART_MOST_PAUSE = 30.0


def _stamp(path: Path) -> tuple[float, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime, st.st_size


class Hub:
    """The parts of one hub process. Use ``async with Hub(settings) as hub:``."""

    def __init__(self, settings: Settings, start_broker: bool | None = None) -> None:
        self.settings = settings
        if settings.replica_name:
            lease.name_this_replica(settings.replica_name)
        self.start_broker = settings.embedded if start_broker is None else start_broker
        self.broker: EmbeddedBroker | None = None
        self.store: Store | None = None
        self.directory: FacilityDirectory | None = None
        self.signer: Signer | None = None
        self.mpi: MpiService | None = None
        self.feeds: dict[str, OutboxRelay] = {}
        self.prompter: Prompter | None = None
        self.monitor: Monitor | None = None
        self.intake: DeviceIntake | None = None  # home readings, from MQTT and HTTP
        self.mqtt: Any = None  # adapters.devices.mqtt.MqttDeviceGateway when started
        self.publisher: Publisher | None = None
        self.checks: EdgeChecks | None = None
        self.deadletters: DeadLetterKeeper | None = None
        self.archive: DeadLetterArchive | None = None
        self.runners: list[ProjectionRunner] = []
        self.ingest: IngestStage | None = None
        self._server: uvicorn.Server | None = None
        self._tasks: list[asyncio.Task] = []
        self._stopping = asyncio.Event()
        self._api_context: HubContext | None = None
        # name -> "running" | "restarting" | "stopped" | "done", for /ready.
        self.components: dict[str, str] = {}
        self.acks: JournalAcks | None = None  # durable acknowledgement (ack_after=journal)
        self.receipts: ReceiptSender | None = None  # what became of facilities' inbound events
        self.care = CareRegistry()  # family-doctor teams and devices, as the file says now

    async def __aenter__(self) -> Hub:
        s = self.settings
        if self.start_broker:
            s.data_dir.mkdir(parents=True, exist_ok=True)
            self.broker = EmbeddedBroker(s.embedded_broker_port, s.data_dir / "broker.log")
            self.broker.start()  # main thread on purpose: see EmbeddedBroker's death signal
        try:
            await asyncio.to_thread(ensure_topics, s)
            self.store = await asyncio.to_thread(open_store, s.db_url)
            self.signer = load_or_create_hub_key(s.hub_key_path)
            use_hub_signer(self.signer)
            use_identity_secret(load_or_create_secret(s.identity_secret_path))
            consortium = read_consortium(s.facilities_file)
            load_catalogue(s.recognition_catalogue)  # a bad catalogue stops the start
            # Every projection's tables before anything reads them (the API, the hub's own
            # registry entry); a fresh store, or a projection whose version changed, is
            # rebuilt from the journal here.
            for projection in all_projections().values():
                await asyncio.to_thread(ensure_built, self.store, projection)
            self.directory = consortium.directory(
                await asyncio.to_thread(hub_record, self.store, self.signer, consortium.name))
            self.checks = EdgeChecks(s, self.directory)
            self.publisher = await Publisher(s).start()
            self.receipts = ReceiptSender(self.publisher, s.topics.receipts)
            self.receipts.start()
            if await asyncio.to_thread(durable_ack, s):
                self.acks = JournalAcks(self.store)
                self.acks.start()
            self.deadletters = DeadLetterKeeper(self.store, self.publisher,
                                                s.topics.deadletter)
            self.intake = DeviceIntake(self.store, self.publisher, s.topics.events,
                                       self.deadletters, lambda: self.care, self.signer,
                                       self.acks, s.ack_timeout_s)
            await self.sync_registry(consortium)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        if self._api_context is not None and self._api_context.exports is not None:
            await asyncio.to_thread(self._api_context.exports.close)  # before the store goes
        if self.acks is not None:
            await self.acks.stop()
        if self.receipts is not None:
            await self.receipts.stop()
        if self.deadletters is not None:
            await self.deadletters.close()  # its letters' publishes need the publisher
        if self.publisher is not None:
            await self.publisher.stop()
        if self.checks is not None:
            await asyncio.to_thread(self.checks.close)
        if self.store is not None:
            self.store.dispose()
        if self.broker is not None:
            await asyncio.to_thread(self.broker.stop)

    @property
    def context(self) -> HubContext:
        assert self.store and self.directory and self.publisher and self.checks
        assert self.deadletters
        if self._api_context is None:
            self._api_context = HubContext(self.settings, self.store, self.directory,
                                           self.publisher, self.checks, self.deadletters,
                                           self.mpi, self.readiness, self.acks,
                                           care=self.care, devices=self.intake,
                                           runners=self.runner_states)
        return self._api_context

    def start_api(self) -> asyncio.Task:
        # Keep-alive longer than clients' pools keep idle connections (httpx: 5 s, the same
        # as uvicorn's default): then the client closes first, and a request is never sent
        # on a connection the server is closing at that moment (a ReadError under load).
        config = uvicorn.Config(create_app(self.context), host=self.settings.api_host,
                                port=self.settings.api_port, log_level="warning",
                                lifespan="on", access_log=False, timeout_keep_alive=30)
        self._server = uvicorn.Server(config)
        # The CLI owns Ctrl-C and drains everything in order; uvicorn must not grab the
        # signal for itself (it would stop the API first and re-raise it afterwards).
        self._server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
        # Long-lived start-up objects need no more scanning by the cyclic GC: freezing them
        # makes each collection cheaper on a hot path that allocates per resource.
        gc.freeze()
        task = asyncio.create_task(self._server.serve(), name="api")
        self._tasks.append(task)
        return task

    async def api_ready(self, timeout: float = 15.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (self._server and self._server.started):
            if loop.time() > deadline:
                raise TimeoutError("the API did not start")
            await asyncio.sleep(0.05)

    def _supervised(self, name: str, start: Callable[[], Awaitable[Any]]) -> asyncio.Task:
        """Run a component as a task that is restarted if it dies unexpectedly.

        Components ride out outages themselves; this catches what they did not foresee (a
        bug, an error type nobody expected), so that a hub process never keeps serving with
        a part silently gone. A component that returns (it was stopped) is not restarted."""
        task = asyncio.create_task(self._supervise(name, start), name=name)
        self._tasks.append(task)
        return task

    async def _supervise(self, name: str, start: Callable[[], Awaitable[Any]]) -> Any:
        loop = asyncio.get_running_loop()
        pause = RESTART_FIRST_PAUSE
        while True:
            self.components[name] = "running"
            began = loop.time()
            try:
                result = await start()
            except asyncio.CancelledError:
                self.components[name] = "stopped"
                raise
            except Exception as exc:
                if self._stopping.is_set():
                    self.components[name] = "stopped"
                    raise
                if loop.time() - began > 60:
                    pause = RESTART_FIRST_PAUSE  # it ran a while: a new failure, not a loop
                self.components[name] = "restarting"
                COMPONENT_RESTARTS.labels(name).inc()
                log.error("%s died (%s: %s); restarting it in %.0f s", name,
                          type(exc).__name__, exc, pause, exc_info=exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), pause)
                if self._stopping.is_set():
                    self.components[name] = "stopped"
                    return None
                pause = min(pause * 2, RESTART_MOST_PAUSE)
                continue
            self.components[name] = "stopped" if self._stopping.is_set() else "done"
            return result

    def runner_states(self) -> list[dict[str, Any]]:
        """Each projection runner of this process as the console shows it: applied, lag,
        seconds since its last commit, and the state of its supervised task."""
        wall = time.time()  # the clock of RunnerStats.last_commit
        return [{"name": r.projection.name, "applied": r.stats.applied, "lag": r.stats.lag,
                 "caught_up": r.stats.caught_up, "deadlettered": r.stats.deadlettered,
                 "idle_seconds": round(wall - r.stats.last_commit, 1)
                 if r.stats.last_commit else None,
                 "component": self.components.get(f"projection:{r.projection.name}",
                                                  "running")}
                for r in self.runners]

    async def readiness(self) -> dict[str, Any]:
        """What /ready reports: broker and store reachable, every component running."""
        assert self.store and self.publisher
        broker = await self.publisher.reachable()

        def store_ok() -> bool:
            try:
                with self.store.connect() as conn:  # type: ignore[union-attr]
                    conn.exec_driver_sql("SELECT 1")
                return True
            except HubError:
                return False

        store = await asyncio.to_thread(store_ok)
        components = dict(self.components)
        if self.mqtt is not None and components.get("mqtt") == "running" and \
                not self.mqtt.connected.is_set():
            components["mqtt"] = "disconnected"  # paho reconnects; readings wait in MQTT
        if self._server is not None:
            components["api"] = "running" if self._server.started else "starting"
        ready = broker and store and all(v in ("running", "done")
                                         for v in components.values())
        out: dict[str, Any] = {"ready": ready, "broker": broker, "store": store,
                               "components": components}
        journal = next((r for r in self.runners if r.projection.name == "journal"), None)
        if journal is not None:
            out["journal_lag_events"] = journal.stats.lag
        return out

    async def sync_registry(self, consortium: Consortium) -> int:
        """Publish an Organization event for each registry entry that changed; make the
        directory (gateway, ingest, workers) use the new entries. Returns the count."""
        assert self.store and self.signer and self.publisher and self.directory
        hub = await asyncio.to_thread(hub_record, self.store, self.signer, consortium.name)
        records = [f.record for f in consortium.facilities] + [hub]
        changed = await asyncio.to_thread(pending, self.store, records)
        if changed:
            await self.publisher.publish(self.settings.topics.events,
                                         [organization_event(r, self.signer) for r in changed])
            await asyncio.to_thread(mark_published, self.store, changed)
            log.info("registry: published %d Organization event(s): %s", len(changed),
                     ", ".join(r.id for r in changed))
        care = await asyncio.to_thread(care_sync.pending, self.store, consortium.care)
        if care:
            await self.publisher.publish(self.settings.topics.events, [
                care_sync.event(sid, key, res, self.signer) for sid, key, res, _ in care])
            await asyncio.to_thread(care_sync.mark_published, self.store, care)
            log.info("registry: published %d team, resident and device event(s)", len(care))
        self.care = consortium.care
        if self._api_context is not None:
            self._api_context.care = consortium.care
        fresh = consortium.directory(hub)
        records_changed = {f.record for f in fresh} != {f.record for f in self.directory}
        self.directory.refresh(fresh)  # tokens and apps: only this process uses them
        if records_changed and self.checks is not None:
            # Validation workers read the consortium file themselves: restart them on it.
            await asyncio.to_thread(self.checks.reload)
        return len(changed)

    def start_registry_watch(self) -> asyncio.Task:
        """Follow the consortium file: each change is published and takes effect."""
        return self._supervised("registry-watch", self._watch_registry)

    async def _watch_registry(self) -> None:
        path = self.settings.facilities_file
        if path is None:
            return  # the bundled demo file cannot change
        seen = _stamp(path)
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(),
                                       self.settings.registry_poll_seconds)
            stamp = _stamp(path)
            if stamp == seen:
                continue
            seen = stamp
            try:
                consortium = read_consortium(path)
            except HubError as exc:
                log.error("consortium file changed but is not usable; keeping the registry "
                          "as it was: %s", exc)
                continue
            try:
                await self.sync_registry(consortium)
            except TRANSIENT as exc:  # broker or store away: publish it on the next look
                log.warning("registry: cannot publish the change yet (%s); retrying", exc)
                seen = None

    async def start_mqtt(self, url: str) -> None:
        """The MQTT device gateway (``adapters.devices.mqtt``), feeding this hub's intake."""
        from adapters.devices.mqtt import MqttDeviceGateway

        assert self.intake
        m = self.settings.monitoring
        self.mqtt = MqttDeviceGateway(self.intake, url, m.mqtt_topic, m.mqtt_client_id)
        await self.mqtt.start()
        self.components["mqtt"] = "running"

    def start_ingest(self) -> asyncio.Task:
        assert self.directory and self.publisher
        assert self.store
        self.ingest = IngestStage(self.settings, self.directory, self.publisher, self.store,
                                  self.checks, self.receipts)
        return self._supervised("ingest", self.ingest.run)

    def start_projections(self, names: Sequence[str] | None = None,
                          until_caught_up: bool = False) -> list[asyncio.Task]:
        assert self.store and self.publisher
        catalogue = all_projections()
        tasks = []
        for name in names or list(catalogue):
            # The journal's commits are what a durable acknowledgement and a receipt wait for.
            on_commit = self._journal_committed if name == "journal" else None
            if name == "monitoring" and not until_caught_up:
                assert self.signer
                self.monitor = Monitor(self.settings, self.store, self.publisher, self.signer,
                                       self.acks)
                on_commit = self.monitor.wake  # judge new readings as soon as they are stored
            runner = ProjectionRunner(self.settings, self.store, catalogue[name], self.publisher,
                                      on_commit=on_commit)
            self.runners.append(runner)
            if until_caught_up:  # a one-shot tool: a failure is its result, not restarted
                task = asyncio.create_task(runner.run(True), name=f"projection:{name}")
                self._tasks.append(task)
            elif name == "journal":
                # Acknowledgements and receipts wait for its commits: its own loop keeps it
                # from queueing behind requests and the other runners.
                task = self._supervised(f"projection:{name}", runner.run_on_own_loop)
            else:
                task = self._supervised(f"projection:{name}", runner.run)
            tasks.append(task)
            if name == "mpi" and not until_caught_up:
                tasks.append(self._start_mpi(runner))
            if name == "recognition" and not until_caught_up:
                tasks.append(self._start_prompter())
            if name == "referral" and not until_caught_up:
                tasks.append(self._start_referral_feed())
            if self.monitor is not None and name == "monitoring" and not until_caught_up:
                tasks.append(self._supervised("monitor", self.monitor.run))
            feed = FEEDS.get(name)
            if feed is not None and not until_caught_up:
                table, topic, ce_type = feed(self.settings)
                relay = OutboxRelay(self.store, self.publisher, table, topic, ce_type)
                self.feeds[name] = relay
                tasks.append(self._supervised(f"feed:{name}", relay.run))
        if "journal" in (names or catalogue) and not until_caught_up:
            tasks.append(self._start_archive())
        return tasks

    def _journal_committed(self, events: Sequence[Event], at: float) -> None:
        if self.acks is not None:
            self.acks.committed(events, at)
        if self.receipts is not None:
            self.receipts.journaled(events, at)

    def _start_archive(self) -> asyncio.Task:
        """Beside the journal: dead letters that only reached the topic go into SQL too."""
        assert self.store
        self.archive = DeadLetterArchive(self.settings, self.store)
        return self._supervised("deadletters:archive", self.archive.run)

    def _start_prompter(self) -> asyncio.Task:
        """The order-time recognition prompt, and the relay of its messages."""
        assert self.store and self.publisher and self.directory
        directory = self.directory
        self.prompter = Prompter(self.store, load_catalogue(self.settings.recognition_catalogue),
                                 lambda: {f.id: f.record for f in directory})
        relay = OutboxRelay(self.store, self.publisher, recognition_outbox,
                            self.settings.topics.recognition, "hie.recognition.v1")
        self.feeds["recognition"] = relay
        self._supervised("feed:recognition", relay.run)
        return self._supervised("prompter", self.prompter.run)

    def _start_referral_feed(self) -> asyncio.Task:
        """The referral feed: each step with the decision the fold made on it."""
        assert self.store and self.publisher and self.directory
        directory = self.directory
        relay = ReferralFeedRelay(self.store, self.publisher, self.settings.topics.referral,
                                  referral_policy(self.settings),
                                  lambda: {f.id: f.record for f in directory})
        self.feeds["referral"] = relay
        return self._supervised("feed:referral", relay.run)

    def _start_mpi(self, runner: ProjectionRunner) -> asyncio.Task:
        """The patient index decides where its projection runs: it reads what that folds."""
        assert self.store and self.publisher and self.signer

        async def caught_up() -> bool:
            return runner._consumer is not None and await runner.caught_up()

        self.mpi = MpiService(self.settings, self.store, self.publisher, self.signer,
                              caught_up, self.acks)
        if self._api_context is not None:
            self._api_context.mpi = self.mpi
        return self._supervised("mpi", self.mpi.run)

    async def stop(self) -> None:
        """Graceful stop, bounded by ``stop_timeout_s``. In order:

        1. The API takes no new requests (503 with Retry-After); those already inside run to
           their answer, whose durable acknowledgement needs the journal still running.
        2. What makes new events stops: ingest stage (it finishes its batch), patient index,
           monitor, registry watch.
        3. The journal and every projection apply the log up to its end, so no projection
           holds a row the journal lacks and nothing acknowledged is left unprojected (the
           bundled broker forgets the log when it stops).
        4. Runners, feeds and the API server stop; tasks end.

        Past the bound the remaining steps are cut short: what the journal committed is
        kept, projections catch up from the log on the next start (or are rebuilt).
        """
        if self._stopping.is_set():
            return
        self._stopping.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.stop_timeout_s

        def left() -> float:
            return max(0.0, deadline - loop.time())

        if self._server is not None and self._api_context is not None:
            gate = self._api_context.gate
            gate.close()
            if not await gate.drained(left()):
                log.warning("stop: %d request(s) still unanswered after %.0f s", gate.inside,
                            self.settings.stop_timeout_s)
        if self.mqtt is not None:  # readings being handled get their acknowledgement
            await self.mqtt.stop()
            self.components["mqtt"] = "stopped"
        producers = [t for t in self._tasks if t.get_name() in ("ingest", "mpi", "monitor")]
        if self.ingest is not None:
            self.ingest.stop()
        if self.mpi is not None:
            self.mpi.stop()
        if self.monitor is not None:
            self.monitor.stop()
        for t in producers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(t), left())
        await self._drain_runners(left)
        if self._server is not None:
            self._server.should_exit = True
        for relay in self.feeds.values():
            relay.stop()
        if self.prompter is not None:
            self.prompter.stop()
        if self.archive is not None:
            self.archive.stop()
        for r in self.runners:
            r.stop()
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            # A few seconds even past the bound: each runner finishes the batch it holds.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(t, timeout=max(left(), 5.0))

    async def _drain_runners(self, left: Callable[[], float]) -> None:
        """Wait until every running projection (the journal first among them) has applied
        the log up to its end, or the time is up."""
        running = [r for r in self.runners if r._consumer is not None]
        while running and left() > 0:
            try:
                lagging = [r for r in running if not await r.caught_up()]
            except Exception as exc:  # the broker is gone: nothing more to drain from it
                log.warning("stop: cannot see the log's end (%s); not waiting for it", exc)
                return
            if not lagging:
                return
            running = [r for r in lagging if r._consumer is not None]
            await asyncio.sleep(min(0.1, left()))
        if running:
            log.warning("stop: after %.0f s, projections still behind the log: %s",
                        self.settings.stop_timeout_s,
                        ", ".join(f"{r.projection.name} ({r.stats.lag})" for r in running))
