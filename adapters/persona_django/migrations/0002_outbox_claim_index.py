"""The outbox's indexes, for the delivery worker.

* ``persona_outbox_claim`` ``(status, next_attempt_at, created_at)`` serves ``claim``'s
  filter *and* its ``ORDER BY next_attempt_at, created_at``: taking a batch reads the first
  rows of the index instead of sorting every due row, payloads included. It replaces
  ``persona_outbox_due`` ``(status, next_attempt_at)``, a prefix of it.
* PostgreSQL only: Django's ``varchar_pattern_ops`` companions of the ``id`` and
  ``profile_id`` indexes (``…_like``, for ``LIKE 'x%'`` lookups, which nothing runs on this
  table; the admin's search is ``icontains``/exact) are dropped: every claim, completion and
  retry writes a new row version into each index. The table's ``fillfactor`` goes to 50:
  every row is written at least three times (insert, lease, outcome), and a page with room
  keeps the lease update (``locked_until``, which no index covers) on the page without
  touching any index (a HOT update); on a 500-item claim this took the lease statement from
  ~36 to ~20 µs per item. The price is up to twice the table's size on disk for rows kept
  until ``DatabaseOutbox.prune``. Both only affect speed, and are undone by reversing this
  migration.
"""

from django.db import migrations, models

FILLFACTOR = 50


def _like_indexes(schema_editor, table):
    # the names Django's PostgreSQL schema editor gave them (``_create_like_index_sql``)
    return [
        schema_editor._create_index_name(table, [column], suffix="_like")
        for column in ("id", "profile_id")
    ]


def tune_postgresql(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    quote = schema_editor.quote_name
    model = apps.get_model("persona", "OutboxMessage")
    table = model._meta.db_table
    for name in _like_indexes(schema_editor, table):
        schema_editor.execute(f"DROP INDEX IF EXISTS {quote(name)}")
    schema_editor.execute(f"ALTER TABLE {quote(table)} SET (fillfactor = {FILLFACTOR})")


def untune_postgresql(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    quote = schema_editor.quote_name
    model = apps.get_model("persona", "OutboxMessage")
    table = model._meta.db_table
    for name, column in zip(_like_indexes(schema_editor, table), ("id", "profile_id")):
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {quote(name)} ON {quote(table)} "
            f"({quote(column)} varchar_pattern_ops)"
        )
    schema_editor.execute(f"ALTER TABLE {quote(table)} RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [
        ("persona", "0001_initial"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="outboxmessage",
            index=models.Index(
                fields=["status", "next_attempt_at", "created_at"], name="persona_outbox_claim"
            ),
        ),
        migrations.RemoveIndex(
            model_name="outboxmessage",
            name="persona_outbox_due",
        ),
        migrations.RunPython(tune_postgresql, untune_postgresql, elidable=False),
    ]
