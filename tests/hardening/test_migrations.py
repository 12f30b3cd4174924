"""Schema migrations are reversible where possible and never drop judgment data.

(a) Every migration of the project's apps can be unapplied, except those listed in IRREVERSIBLE
    with a reason: checked from the operations, then for real by migrating the apps back to zero
    and forward again on the test database.
(b) No migration removes a field or model of Judgment, ServedPair or Participant, nor runs SQL
    that drops or deletes from their tables; data migrations (RunPython) touching them must be
    listed in REVIEWED_DATA_MIGRATIONS after a reading.
A new migration is checked the moment it is written, with no edit here.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.apps import apps
from django.core.management import call_command
from django.db import connection, migrations
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader

PROJECT_APPS = ("elicitation", "annotation", "modeling")
# (app, migration name) -> why it cannot be unapplied. Empty: every migration is reversible.
IRREVERSIBLE: dict[tuple[str, str], str] = {}
# The models whose rows are what participants were paid for (annotation app, lower-case names).
JUDGMENT_DATA = ("judgment", "servedpair", "participant")
# (app, migration name) of RunPython operations read and found to keep judgment data.
REVIEWED_DATA_MIGRATIONS: dict[tuple[str, str], str] = {}
DESTRUCTIVE_SQL = re.compile(r"\b(drop\s+(table|column)|delete\s+from|truncate)\b", re.IGNORECASE)


def _project_migrations() -> list[tuple[tuple[str, str], migrations.Migration]]:
    loader = MigrationLoader(None, ignore_no_migrations=True)  # from disk, no database needed
    return sorted((key, migration) for key, migration in loader.disk_migrations.items() if key[0] in PROJECT_APPS)


def _irreversible_operations(migration: migrations.Migration) -> list[str]:
    return [op.describe() for op in migration.operations if not op.reversible]


def test_every_project_migration_is_reversible_or_listed_with_a_reason() -> None:
    found = _project_migrations()
    assert {key[0] for key, _ in found} == set(PROJECT_APPS)
    unlisted = {
        key: ops for key, migration in found if (ops := _irreversible_operations(migration)) and key not in IRREVERSIBLE
    }
    assert unlisted == {}, "Give these a reverse, or list them in IRREVERSIBLE with the reason."
    stale = set(IRREVERSIBLE) - {key for key, migration in found if _irreversible_operations(migration)}
    assert not stale, f"Listed as irreversible but are not (or no longer exist): {stale}"


def _drops_judgment_data(app: str, operation: Any) -> str | None:
    """Why this operation loses judgment data, or None."""
    if app != "annotation":
        return None
    if isinstance(operation, migrations.RemoveField) and operation.model_name_lower in JUDGMENT_DATA:
        return f"removes field {operation.model_name}.{operation.name}"
    if isinstance(operation, migrations.DeleteModel) and operation.name_lower in JUDGMENT_DATA:
        return f"deletes model {operation.name}"
    if isinstance(operation, migrations.RunSQL):
        statements = operation.sql if isinstance(operation.sql, list | tuple) else [operation.sql]
        if any(DESTRUCTIVE_SQL.search(str(statement)) for statement in statements):
            return f"runs destructive SQL: {operation.sql!r}"
    return None


def test_no_migration_drops_a_field_or_model_of_judgment_data() -> None:
    dropped = [
        f"{app}.{name}: {why}"
        for (app, name), migration in _project_migrations()
        for operation in migration.operations
        if (why := _drops_judgment_data(app, operation))
    ]
    assert dropped == [], "A migration would lose judgments: keep the columns (deprecate, do not drop)."
    unreviewed = [
        (app, name) for (app, name), migration in _project_migrations()
        if any(isinstance(op, migrations.RunPython) for op in migration.operations)
        and (app, name) not in REVIEWED_DATA_MIGRATIONS
    ]
    assert unreviewed == [], "Read these data migrations; list them in REVIEWED_DATA_MIGRATIONS if they keep data."


def test_the_check_catches_a_migration_that_drops_a_judgment_column() -> None:
    # The guard itself, on operations a careless migration would contain.
    assert _drops_judgment_data("annotation", migrations.RemoveField("judgment", "rationale"))
    assert _drops_judgment_data("annotation", migrations.DeleteModel("ServedPair"))
    assert _drops_judgment_data("annotation", migrations.RunSQL("DELETE FROM annotation_judgment"))
    assert not _drops_judgment_data("annotation", migrations.RemoveField("exportjob", "error"))
    assert not _drops_judgment_data("annotation", migrations.AddField("judgment", "note", None))


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_project_apps_migrate_back_to_zero_and_forward_again() -> None:
    """For real, on the test database: every backward step runs, then the schema is rebuilt.

    transaction=True: migrations need a database outside the test transaction; the tables are
    flushed after the test anyway, and `finally` rebuilds the schema even if a step fails.
    """
    executor = MigrationExecutor(connection)
    leaves = [key for key in executor.loader.graph.leaf_nodes() if key[0] in PROJECT_APPS]
    try:
        # Unapplying elicitation's first migration unapplies everything that depends on it.
        call_command("migrate", "elicitation", "zero", verbosity=0)
        tables = set(connection.introspection.table_names())
        leftovers = {model._meta.db_table for app in PROJECT_APPS for model in apps.get_app_config(app).get_models()}
        assert not tables & leftovers, f"Tables left after migrating to zero: {tables & leftovers}"
        recorder = MigrationExecutor(connection).recorder
        assert not {key for key in recorder.applied_migrations() if key[0] in PROJECT_APPS}
    finally:
        call_command("migrate", verbosity=0)
    applied = MigrationExecutor(connection).recorder.applied_migrations()
    assert set(leaves) <= set(applied)
    tables = set(connection.introspection.table_names())
    assert {"annotation_judgment", "annotation_servedpair", "annotation_participant"} <= tables
