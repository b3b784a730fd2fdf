"""The store: migrations build exactly the models' schema, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from leeward.fleet.store.db import Store
from leeward.fleet.store.models import Base


async def test_migrations_match_the_models(database_url):
    store = Store(database_url)
    try:
        await store.migrate()
        await store.migrate()  # a second start finds nothing to do

        def diff(connection):
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return compare_metadata(context, Base.metadata)

        async with store.engine.connect() as conn:
            changes = await conn.run_sync(diff)
        assert changes == [], f"models and migrations differ; add a migration: {changes}"
    finally:
        await store.close()


async def test_grouped_updates_share_a_transaction_but_fail_alone(database_url):
    import asyncio

    import pytest
    from sqlalchemy import select, update
    from sqlalchemy.exc import IntegrityError

    from leeward.fleet.store.models import RegionRow

    store = Store(database_url)
    try:
        await store.migrate()
        async with store.write() as session:
            session.add_all(
                [RegionRow(name=f"r{i}", network=f"127.{110 + i}.0.0/16") for i in range(4)]
            )
        good = [
            update(RegionRow).where(RegionRow.name == f"r{i}").values(next_address=10 + i)
            for i in range(4)
        ]
        missing = update(RegionRow).where(RegionRow.name == "nowhere").values(next_address=1)
        bad = update(RegionRow).where(RegionRow.name == "r0").values(network=None)  # NOT NULL
        results = await asyncio.gather(
            *(store.update_soon(s) for s in [*good[:2], bad, missing, *good[2:]]),
            return_exceptions=True,
        )
        assert results[:2] == [1, 1]
        assert isinstance(results[2], IntegrityError)
        assert results[3:] == [0, 1, 1]
        async with store.read() as session:
            rows = (await session.execute(select(RegionRow).order_by(RegionRow.name))).scalars()
            assert [(r.next_address, r.network) for r in rows] == [
                (10 + i, f"127.{110 + i}.0.0/16") for i in range(4)
            ]
        with pytest.raises(IntegrityError):
            await store.update_soon(bad)
    finally:
        await store.close()


@pytest.mark.postgres
async def test_deadlocks_and_serialization_failures_are_transient(postgres_url):
    """A placement batch that PostgreSQL kills as a deadlock's victim is run again; anything
    else is not."""
    from sqlalchemy import text

    from leeward.fleet.store.db import is_transient

    store = Store(postgres_url)
    try:
        for code, transient in (("40P01", True), ("40001", True), ("23505", False)):
            with pytest.raises(Exception) as failure:  # noqa: PT011 - any DBAPI error
                async with store.write() as session:
                    await session.execute(
                        text(f"DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '{code}'; END $$")
                    )
            assert is_transient(failure.value) is transient, code
        assert not is_transient(ValueError("not a database error"))
    finally:
        await store.close()
