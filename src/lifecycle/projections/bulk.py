"""Bulk inserts of read-model rows: COPY on PostgreSQL, one driver executemany on SQLite.

A projection catch-up writes tens of thousands of rows per transaction. SQLAlchemy's
executemany spends more time per row than the database does, and on PostgreSQL each row
is still a statement. Values go through the same bind processors SQLAlchemy would use
(UTC datetimes), so the rows read back exactly as if inserted the ordinary way; JSON
values are written by orjson where it writes what json does (read back the same value).
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from psycopg import sql

from lifecycle.projections.tables import UTCDateTime
from lifecycle.store.fast_json import plain

Converter = Callable[[Any], Any]


def _converters(table: sa.Table, columns: Sequence[str], dialect: sa.Dialect
                ) -> list[Converter | None]:
    found: list[Converter | None] = []
    for name in columns:
        column_type = table.c[name].type
        processor: Converter | None = column_type.bind_processor(dialect)
        if isinstance(column_type, sa.Boolean):
            processor = None  # both drivers take Python booleans as they are
        elif isinstance(column_type, UTCDateTime) and dialect.name == "sqlite":
            processor = _sqlite_utc_text
        elif isinstance(column_type, sa.JSON):
            processor = json_text  # (SQLAlchemy's, on SQLite: json.dumps; none on PostgreSQL)
        found.append(processor)
    return found


def json_text(value: Any) -> str:
    """The JSON text of a column value: what json.dumps writes, read back as the same
    value, written by orjson (compact, non-ASCII characters as they are) when the value
    holds only types both spell alike (lifecycle.store.fast_json.plain); otherwise, or
    if orjson refuses it, by json.dumps."""
    if type(value) in (dict, list) and plain(value):
        try:
            return orjson.dumps(value).decode()
        except orjson.JSONEncodeError:
            pass
    return json.dumps(value)


def _sqlite_utc_text(value: datetime) -> str:
    """What SQLAlchemy stores for a UTCDateTime on SQLite ("2024-03-10 09:30:15.000000"),
    without its generic formatting (a third of the cost of a row)."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _tuples(rows: Sequence[dict[str, Any]], columns: Sequence[str],
            converters: Sequence[Converter | None]) -> list[tuple[Any, ...]]:
    pick = operator.itemgetter(*columns)
    several = len(columns) > 1  # itemgetter of one key gives the value, not a tuple
    converted = [(index, convert) for index, convert in enumerate(converters) if convert]
    result: list[tuple[Any, ...]] = []
    for row in rows:
        values = list(pick(row)) if several else [pick(row)]
        for index, convert in converted:
            if values[index] is not None:
                values[index] = convert(values[index])
        result.append(tuple(values))
    return result


def insert_rows(conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]],
                encoded: Collection[str] = ()) -> None:
    """Inserts `rows` (every row with the same keys) into `table` in `conn`'s transaction.
    `encoded`: JSON columns whose values are given as their text (`json_text`'s)."""
    if not rows:
        return
    columns = list(rows[0])
    converters = _converters(table, columns, conn.dialect)
    for index, name in enumerate(columns):
        if name in encoded:
            converters[index] = None
    values = _tuples(rows, columns, converters)
    if conn.dialect.name == "postgresql":
        copy = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, columns)))
        with conn.connection.driver_connection.cursor() as cursor:  # type: ignore[union-attr]
            with cursor.copy(copy) as writer:
                for row in values:
                    writer.write_row(row)
    elif conn.dialect.name == "sqlite":
        quote = conn.dialect.identifier_preparer.quote
        statement = (f"INSERT INTO {quote(table.name)} ({', '.join(map(quote, columns))}) "
                     f"VALUES ({', '.join('?' * len(columns))})")
        conn.exec_driver_sql(statement, values)
    else:
        conn.execute(table.insert(), [{name: json.loads(value) if name in encoded else value
                                       for name, value in row.items()} for row in rows])


def update_rows(conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]],
                key: str, encoded: Collection[str] = ()) -> None:
    """Sets the other columns of `rows` (every row with the same keys, `key` among them,
    no column all None) on the rows of `table` with their `key`, in `conn`'s transaction:
    on PostgreSQL one statement over arrays (sent in binary: no text array quoting), on
    SQLite one executemany. `encoded`: as for `insert_rows`."""
    if not rows:
        return
    columns = [*(name for name in rows[0] if name != key), key]
    converters = _converters(table, columns, conn.dialect)
    for index, name in enumerate(columns):
        if name in encoded:
            converters[index] = None
    values = _tuples(rows, columns, converters)
    quote = conn.dialect.identifier_preparer.quote
    if conn.dialect.name == "postgresql":
        def array(name: str) -> str:
            column_type = table.c[name].type
            element = ("TEXT" if isinstance(column_type, sa.JSON)
                       else column_type.compile(dialect=conn.dialect))
            return f"CAST(%b AS {element}[])"

        def assign(name: str) -> str:
            if isinstance(table.c[name].type, sa.JSON):
                return f"{quote(name)} = CAST(v.{quote(name)} AS JSON)"
            return f"{quote(name)} = v.{quote(name)}"

        statement = (
            f"UPDATE {quote(table.name)} AS t SET {', '.join(map(assign, columns[:-1]))} "
            f"FROM unnest({', '.join(map(array, columns))}) "
            f"AS v({', '.join(map(quote, columns))}) WHERE t.{quote(key)} = v.{quote(key)}")
        with conn.connection.driver_connection.cursor() as cursor:  # type: ignore[union-attr]
            cursor.execute(statement, [list(column) for column in zip(*values)])
    elif conn.dialect.name == "sqlite":
        sets = ", ".join(f"{quote(name)} = ?" for name in columns[:-1])
        conn.exec_driver_sql(f"UPDATE {quote(table.name)} SET {sets} WHERE {quote(key)} = ?",
                             values)
    else:
        for row in rows:
            conn.execute(table.update().where(table.c[key] == row[key]).values(
                {name: json.loads(value) if name in encoded else value
                 for name, value in row.items() if name != key}))
