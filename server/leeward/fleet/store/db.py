"""The fleet's database: SQLite by default, PostgreSQL for several replicas.

Writes are serialised where it matters. On SQLite, one writer at a time per process waits on
an asyncio lock (SQLite's own busy handler sleeps in steps of up to 100 ms, which under load costs
far more than the wait itself), and every write transaction starts with `BEGIN IMMEDIATE`, so a
writer in another process (an operator's `leeward fleet token create`) is waited for, never
deadlocked with. On PostgreSQL the allocator locks the rows it decides on. Reads take no lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Executable, event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK = 0x1EE_3A2D
"""PostgreSQL advisory lock held while migrating, so replicas starting together take turns."""


TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})
"""Deadlock detected, serialization failure: PostgreSQL rolled the transaction back, and the
same transaction run again can succeed."""


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` is a failure that a new attempt of the whole transaction may not meet."""
    from sqlalchemy.exc import DBAPIError

    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    cause = getattr(orig, "__cause__", None)
    code = code or getattr(cause, "sqlstate", None)
    return code in TRANSIENT_SQLSTATES


_MARKS = "leeward.marks"


def mark(session: AsyncSession, name: str) -> None:
    """Say that this write transaction wrote `name` (`Store.wrote` hears of it once committed)."""
    session.info.setdefault(_MARKS, set()).add(name)


class Store:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        parsed = make_url(url)
        self.url = url
        self.dialect = parsed.get_backend_name()
        options: dict[str, Any] = {"echo": echo}
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            options.update(connect_args={"timeout": 30}, pool_size=10, max_overflow=20)
        else:
            options.update(pool_size=10, max_overflow=40, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(url, **options)
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine)
        self._reader = self.engine.execution_options(sqlite_begin="DEFERRED")
        self._writer = asyncio.Lock() if self.dialect == "sqlite" else None
        self._grouped: list[tuple[Executable, asyncio.Future[int]]] = []
        self._grouper: asyncio.Task[None] | None = None
        self.committed: list[Callable[[], None]] = []
        """Called after every write transaction this process commits (the event log wakes its
        streams so)."""
        self.wrote: dict[str, list[Callable[[], None]]] = {}
        """Called after a committed write transaction that `mark`ed the name (a notification
        written: its delivery starts)."""

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A write transaction: committed when the block ends, rolled back if it raises."""
        if self._writer is None:
            async with (
                AsyncSession(self.engine, expire_on_commit=False) as session,
                session.begin(),
            ):
                yield session
        else:
            async with (
                self._writer,
                AsyncSession(self.engine, expire_on_commit=False) as session,
                session.begin(),
            ):
                yield session
        for callback in self.committed:
            callback()
        for name in session.info.get(_MARKS, ()):
            for callback in self.wrote.get(name, ()):
                callback()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with AsyncSession(self._reader, expire_on_commit=False) as session, session.begin():
            yield session

    async def update_soon(self, statement: Executable) -> int:
        """Run one small UPDATE in a transaction shared with the others that arrive at the same
        time (group commit), and return how many rows it changed. State changes and agents'
        heartbeats go this way: each would otherwise pay a whole transaction of its own."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._grouped.append((statement, future))
        if self._grouper is None or self._grouper.done():
            self._grouper = asyncio.get_running_loop().create_task(
                self._run_grouped(), name="store group commit"
            )
        return await future

    async def _run_grouped(self) -> None:
        while self._grouped:
            group, self._grouped = self._grouped[:256], self._grouped[256:]
            try:
                counts = []
                async with self.write() as session:
                    for statement, _ in group:
                        result = await session.execute(statement)
                        counts.append(int(getattr(result, "rowcount", 0)))
                for (_, future), count in zip(group, counts, strict=True):
                    if not future.done():
                        future.set_result(count)
            except asyncio.CancelledError:
                for _, future in group:
                    future.cancel()
                raise
            except Exception:
                # One statement spoiled the group: run each alone, so that only it fails.
                for statement, future in group:
                    await self._run_alone(statement, future)

    async def _run_alone(self, statement: Executable, future: asyncio.Future[int]) -> None:
        try:
            async with self.write() as session:
                result = await session.execute(statement)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(int(getattr(result, "rowcount", 0)))

    async def migrate(self) -> None:
        """Apply alembic migrations up to head; safe when several replicas start at once."""
        async with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
                await conn.commit()
            try:
                await conn.run_sync(_upgrade)
                await conn.commit()
            finally:
                if self.dialect == "postgresql":
                    await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
                    await conn.commit()

    async def close(self) -> None:
        if self._grouper is not None:
            self._grouper.cancel()
            await asyncio.gather(self._grouper, return_exceptions=True)
        await self.engine.dispose()

    def describe(self) -> str:
        """The URL without its password, for logs and /healthz."""
        return make_url(self.url).render_as_string(hide_password=True)


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event, not the driver, open transactions.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")


def alembic_config(connection: Connection | None = None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    from alembic import command

    command.upgrade(alembic_config(connection), "head")
