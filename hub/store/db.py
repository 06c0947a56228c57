"""The SQL store (SQLAlchemy Core): SQLite by default, PostgreSQL by URL.

Driver errors never leave this package raw: :meth:`Store.begin` translates them to
:class:`hub.errors.StoreError` with the original chained, so callers catch one type.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from hub.errors import StoreError
from hub.store.checkpoints import BACKSTOP_PAGES, CHECKPOINTS
from hub.store.schema import journal, metadata


def _normalise(url: str) -> str:
    # Users paste libpq-style URLs; the hub ships psycopg 3, not psycopg2.
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


class WriterGate:
    """One SQLite writer at a time in this process, and the journal first.

    SQLite has one write lock per file. Left to its busy handler, the writers of one process
    (the journal and every projection) retry with sleeps of up to 100 ms, so the journal,
    whose commit every durable acknowledgement waits for, can lose several rounds to
    projections that nobody is waiting for. Here a writer waits on a condition instead (woken
    the moment the lock is free) and an ``urgent`` writer goes before the others. Other
    processes still meet at SQLite's lock (busy_timeout)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._owner: int | None = None
        self._depth = 0
        self._urgent = 0

    @contextmanager
    def hold(self, urgent: bool = False) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._owner != me:
                self._urgent += urgent
                try:
                    while self._owner is not None or (not urgent and self._urgent):
                        self._cond.wait()
                finally:
                    self._urgent -= urgent
                self._owner = me
            self._depth += 1
        try:
            yield
        finally:
            with self._cond:
                self._depth -= 1
                if not self._depth:
                    self._owner = None
                    self._cond.notify_all()


class Store:
    """A database the hub writes projections, positions and the journal into."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._gate = WriterGate() if self.dialect == "sqlite" else None
        path = sqlite_file(engine.url)
        # A file's checkpoints run on a thread of their own (hub.store.checkpoints).
        self._wal = CHECKPOINTS.register(path.resolve()) if path is not None else None

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextmanager
    def begin(self, urgent: bool = False, on: Connection | None = None
              ) -> Iterator[Connection]:
        """One transaction: everything inside commits together or not at all. ``urgent``:
        someone waits for this commit (the journal); on SQLite it goes first. ``on``: a
        connection the caller holds (and set up), instead of one from the pool."""
        gate = self._gate.hold(urgent) if self._gate else contextlib.nullcontext()
        with gate, self._begin(on) as conn:
            yield conn

    @contextmanager
    def _begin(self, on: Connection | None = None) -> Iterator[Connection]:
        try:
            with contextlib.nullcontext(on) if on is not None else self.engine.connect() \
                    as conn:
                # SQLite: a writer takes the write lock up front (BEGIN IMMEDIATE) so two
                # writers queue on busy_timeout instead of one failing on lock upgrade.
                conn.info["hub_write"] = True
                try:
                    with conn.begin():
                        yield conn
                finally:
                    conn.info.pop("hub_write", None)
            if self._wal is not None:
                CHECKPOINTS.nudge(self._wal)
        except SQLAlchemyError as exc:
            raise StoreError(f"{self.dialect} store: {exc.__class__.__name__}: {exc}") from exc

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"{self.dialect} store: {exc.__class__.__name__}: {exc}") from exc

    def serialise(self, conn: Connection, name: str) -> None:
        """Hold ``name`` until this transaction ends, so replicas that start together create
        tables one after the other (PostgreSQL's catalogue refuses two CREATE TABLEs of one
        name at once). SQLite needs nothing: a writer holds the whole database already."""
        if self.dialect == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:n))"),
                         {"n": f"hub:{name}"})

    def create_hub_tables(self) -> None:
        with self.begin() as conn:
            self.serialise(conn, "schema")
            metadata.create_all(conn)
            # Indexes added to tables that existed before them (create_all skips those).
            for index in journal.indexes:
                index.create(conn, checkfirst=True)
            if self.dialect == "postgresql" and conn.execute(sa.text(
                    "SELECT data_type FROM information_schema.columns WHERE table_schema = "
                    "current_schema() AND table_name = 'hub_journal' AND column_name = "
                    "'signature'")).scalar() == "character varying":
                # A journal made before batch signatures held them in varchar(200); to text
                # is a catalogue change in PostgreSQL, no rewrite of the rows.
                conn.execute(sa.text(
                    "ALTER TABLE hub_journal ALTER COLUMN signature TYPE text"))

    def dispose(self) -> None:
        self.engine.dispose()
        if self._wal is not None:
            CHECKPOINTS.unregister(self._wal)
            self._wal = None


def sqlite_file(url: str | sa.URL) -> Path | None:
    """The file a SQLite URL names, also as a ``file:`` URI (``sqlite:///file:data/hub.db
    ?uri=true``); None for other databases and in-memory SQLite."""
    try:
        u = sa.make_url(url) if isinstance(url, str) else url
    except (ArgumentError, ValueError):
        return None
    if u.get_backend_name() != "sqlite" or not u.database:
        return None
    path = u.database
    if path.startswith("file:") and str(u.query.get("uri", "")).lower() in ("true", "1"):
        if u.query.get("mode") == "memory":
            return None
        path = path.removeprefix("file:")
        if path.startswith("//"):  # file://host/path: the host is empty or localhost
            path = "/" + path[2:].partition("/")[2]
        path = unquote(path)
    return Path(path) if path and path != ":memory:" else None


def open_store(url: str, create: bool = True) -> Store:
    """Open (and by default initialise) the store at ``url``."""
    url = _normalise(url)
    if (path := sqlite_file(url)) is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        engine = sa.create_engine(url, future=True, pool_pre_ping=not url.startswith("sqlite"))
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise StoreError(f"cannot open store {url!r}: {exc}") from exc
    if engine.dialect.name == "sqlite":
        _tune_sqlite(engine)
    store = Store(engine)
    if create:
        store.create_hub_tables()
    return store


def open_existing_store(url: str, create_tables: bool = False, hint: str = "") -> Store:
    """Open a store that a hub has already written, for commands that read it.

    Opening a missing SQLite file would create it (and its folder): a command that only reads
    must not leave an empty store behind, so that is an error here, as is a database without
    the hub's journal. ``create_tables`` adds hub tables a newer version needs.
    """
    norm = _normalise(url)
    if norm.startswith("sqlite:///"):
        path = norm.removeprefix("sqlite:///").partition("?")[0]
        if path and path != ":memory:" and not Path(path).is_file():
            raise StoreError(f"no hub has run here yet (no {path}): {hint}".rstrip(": "))
    store = open_store(url, create=False)
    try:
        try:
            ready = sa.inspect(store.engine).has_table(journal.name)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open store {_shown(norm)}: {exc}") from exc
        if not ready:
            raise StoreError(f"no hub has run against {_shown(norm)} yet (no "
                             f"{journal.name} table): {hint}".rstrip(": "))
        if create_tables:
            store.create_hub_tables()
    except BaseException:
        store.dispose()
        raise
    return store


def _shown(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL has no password we could find either
        return url


BUSY_ENV = "HUB_SQLITE_BUSY_TIMEOUT_MS"
CACHE_KIB = 65536  # each SQLite connection's page cache


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record) -> None:  # pragma: no cover - trivial
        # WAL lets the API read while a projection writes; NORMAL sync survives a killed
        # process (only a power loss can drop the last commits); busy_timeout lets several
        # processes share the file instead of failing on a lock.
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        # HUB_SQLITE_BUSY_TIMEOUT_MS: tests shorten it to make a held lock an outage.
        cur.execute(f"PRAGMA busy_timeout={int(os.environ.get(BUSY_ENV) or 30000)}")
        # A 64 MiB page cache and in-memory sorts: index builds after a rebuild and batched
        # upserts stop spilling to temporary files.
        cur.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        cur.execute("PRAGMA temp_store=MEMORY")
        # Checkpoints run on a thread of their own (hub.store.checkpoints); a writer
        # checkpoints itself only past this many pages, should that thread fall behind.
        cur.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
        cur.close()
        # pysqlite's own transaction handling defers BEGIN; take it over so that
        # engine.begin() really starts a transaction (SQLAlchemy's documented recipe).
        dbapi_conn.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:  # pragma: no cover - trivial
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("hub_write") else "BEGIN")


def plain(mapping) -> dict:
    """A result row as a dict with plain ``str`` keys (SQLAlchemy's are ``quoted_name``,
    a str subclass that orjson refuses as a key)."""
    return {str(k): v for k, v in mapping.items()}
