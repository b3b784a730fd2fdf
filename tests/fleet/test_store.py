"""The store: migrations build exactly the models' schema, on SQLite and PostgreSQL."""

from __future__ import annotations

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
