"""The triggers that record every change to an environment as an event (see
leeward.fleet.events), built for a given list of columns. Migrations call these with the columns
of their time: a migration that adds a column an event should carry recreates them."""

from __future__ import annotations

from typing import Any


def _changed(columns: list[str], unnoticed: set[str], different: str) -> str:
    return " OR ".join(f"OLD.{c} {different} NEW.{c}" for c in columns if c not in unnoticed)


def create(op: Any, columns: list[str], unnoticed: set[str]) -> None:
    """Record an event on every insert, and on every update that changes a column of
    `columns` other than those in `unnoticed`."""
    snapshot = ", ".join(f"'{c}', NEW.{c}" for c in columns)
    if op.get_bind().dialect.name == "postgresql":
        # Positions are left NULL: the sequencer numbers committed rows in commit order.
        op.execute(
            "CREATE OR REPLACE FUNCTION environments_record_event() RETURNS trigger AS $$ "  # noqa: S608
            "BEGIN INSERT INTO events (environment_id, owner, at, snapshot) VALUES "
            f"(NEW.id, NEW.owner, NEW.updated_at, json_build_object({snapshot})::text); "
            "RETURN NULL; END $$ LANGUAGE plpgsql"
        )
        op.execute(
            "CREATE TRIGGER environments_insert_event AFTER INSERT ON environments "
            "FOR EACH ROW EXECUTE FUNCTION environments_record_event()"
        )
        op.execute(
            "CREATE TRIGGER environments_update_event AFTER UPDATE ON environments "
            f"FOR EACH ROW WHEN ({_changed(columns, unnoticed, 'IS DISTINCT FROM')}) "
            "EXECUTE FUNCTION environments_record_event()"
        )
        return
    # SQLite has one writer at a time: the trigger numbers the event itself.
    record = (
        "INSERT INTO events (position, environment_id, owner, at, snapshot) VALUES ("  # noqa: S608
        "(SELECT COALESCE(MAX(position), 0) + 1 FROM events), "
        f"NEW.id, NEW.owner, NEW.updated_at, json_object({snapshot}));"
    )
    op.execute(
        f"CREATE TRIGGER environments_insert_event AFTER INSERT ON environments BEGIN {record} END"
    )
    op.execute(
        f"CREATE TRIGGER environments_update_event AFTER UPDATE ON environments "
        f"WHEN {_changed(columns, unnoticed, 'IS NOT')} BEGIN {record} END"
    )


def drop(op: Any) -> None:
    on = " ON environments" if op.get_bind().dialect.name == "postgresql" else ""
    op.execute(f"DROP TRIGGER IF EXISTS environments_update_event{on}")
    op.execute(f"DROP TRIGGER IF EXISTS environments_insert_event{on}")
