"""PostgreSQL only: the usage records table becomes partitioned by month of `occurred_at`
(`usage.partitions`); SQLite keeps its one table, and Django's model state is unchanged.

The table is renamed, a partitioned one made in its place with the same columns, defaults, checks
and identity, a partition made for every month that has records (and the next ones), the rows
copied, the old table dropped, then its indexes and foreign keys made again on the new one (after
the copy: building an index once is faster than keeping it up to date row by row). The primary key
becomes (id, occurred_at) and the request id's unique constraint (request_id, occurred_at), since a
partitioned table's unique constraints must include the partition key.

On a big table this copies every row once, under an exclusive lock: plan the upgrade for a quiet
moment (about a minute per million records on a small machine).
"""

import datetime as dt
import re

from django.db import migrations

TABLE = "usage_usagerecord"
OLD = "usage_usagerecord_unpartitioned"
UNIQUE_REQUEST = "usage_usagerecord_request_id_occurred_at_key"
UNIQUE_ID = "usage_usagerecord_request_id_key"


def _rows(cursor, sql, params=()):
    cursor.execute(sql, params)
    return cursor.fetchall()


def _secondary_indexes_and_foreign_keys(cursor):
    indexes = _rows(
        cursor,
        "SELECT indexdef FROM pg_indexes WHERE tablename = %s AND indexname NOT IN "
        "(SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(%s) AND contype IN ('p', 'u'))",
        [TABLE, TABLE],
    )
    foreign_keys = _rows(
        cursor,
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = to_regclass(%s) AND contype = 'f'",
        [TABLE],
    )
    return [definition for (definition,) in indexes], foreign_keys


def _make_again(cursor, indexes, foreign_keys):
    """The indexes and foreign keys of the renamed table, made on the new one (a partitioned
    table's index definitions read `ON ONLY`)."""
    for definition in indexes:
        cursor.execute(re.sub(rf" ON (ONLY )?(public\.)?{OLD} ", f" ON {TABLE} ", definition))
    for name, definition in foreign_keys:
        cursor.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {name} {definition}")


def _copy_into_new_table(cursor, partitioned):
    cursor.execute(f"ALTER TABLE {TABLE} RENAME TO {OLD}")
    cursor.execute(
        f"CREATE TABLE {TABLE} (LIKE {OLD} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING IDENTITY)"
        + (" PARTITION BY RANGE (occurred_at)" if partitioned else "")
    )


def _fill_and_drop_old(cursor):
    cursor.execute(f"INSERT INTO {TABLE} OVERRIDING SYSTEM VALUE SELECT * FROM {OLD}")
    cursor.execute(f"SELECT setval(pg_get_serial_sequence(%s, 'id'), COALESCE(MAX(id), 0) + 1, false) FROM {TABLE}", [TABLE])
    cursor.execute(f"DROP TABLE {OLD} CASCADE")


def partition_usage_records(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    from usage.partitions import DEFAULT_PARTITION, create_month_partition, months_between, next_month

    with schema_editor.connection.cursor() as cursor:
        indexes, foreign_keys = _secondary_indexes_and_foreign_keys(cursor)
        first, last = _rows(cursor, f"SELECT MIN(occurred_at), MAX(occurred_at) FROM {TABLE}")[0]
        _copy_into_new_table(cursor, partitioned=True)
        cursor.execute(f"CREATE TABLE {DEFAULT_PARTITION} PARTITION OF {TABLE} DEFAULT")
        now = dt.datetime.now(dt.UTC)
        ahead = next_month(next_month(now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)))
        for month in months_between(min(first or now, now), max(last or ahead, ahead)):
            create_month_partition(month)
        _fill_and_drop_old(cursor)
        cursor.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {TABLE}_pkey PRIMARY KEY (id, occurred_at)")
        cursor.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {UNIQUE_REQUEST} UNIQUE (request_id, occurred_at)")
        _make_again(cursor, indexes, foreign_keys)


def unpartition_usage_records(apps, schema_editor):
    """Back to one table: the same steps the other way (the writer kept request ids unique)."""
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        indexes, foreign_keys = _secondary_indexes_and_foreign_keys(cursor)
        _copy_into_new_table(cursor, partitioned=False)
        _fill_and_drop_old(cursor)
        cursor.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {TABLE}_pkey PRIMARY KEY (id)")
        cursor.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {UNIQUE_ID} UNIQUE (request_id)")
        _make_again(cursor, indexes, foreign_keys)


class Migration(migrations.Migration):
    atomic = True

    dependencies = [
        ("usage", "0007_usage_per_person"),
        ("tokens", "0001_initial"),
    ]

    operations = [migrations.RunPython(partition_usage_records, unpartition_usage_records, elidable=False)]
