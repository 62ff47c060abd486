"""Rows on their way through a step: a table in the process's scratch DuckDB database (`sql.scratch`).

A step's rows — a SQL asset's result, a source's rows, a pandas transform's output — are written into a table of
the scratch database as they arrive, and stay there until the write: partition labels, validation, the quarantine
split, statistics and previews are SQL over the table, and the commit streams it into the warehouse in Arrow
batches. The scratch database holds PROVLINE_MEMORY_LIMIT and spills the rest to PROVLINE_HOME/spill, so a chunk of
any size fits; only what a caller fetches (failing rows, a preview's few rows, a pandas transform's input) leaves
DuckDB. The table is dropped when its `Rows` is let go.
"""

from __future__ import annotations

import os
import uuid
import weakref
from collections.abc import Callable
from typing import TypeVar

import duckdb
import numpy as np
import pandas as pd
import pyarrow

from pipelines.sql import PARTITION, arrow_table, quote, scratch, scratch_database

T = TypeVar("T")
BATCH_ROWS = 122_880
"""Rows per Arrow batch when a table streams out (DuckDB's row-group size)."""


class Rows:
    """A table of rows in the scratch database; `{rows}` in a query names it."""

    def __init__(self, name: str):
        self.name = quote(name)
        weakref.finalize(self, _drop, os.getpid(), self.name)

    @classmethod
    def load(cls, source: pyarrow.Table | pyarrow.RecordBatchReader | pd.DataFrame,
             select: str = "SELECT * FROM {source}", params: dict | None = None) -> Rows:
        """A new table of `source` (an Arrow table or stream, or a pandas frame), through `select`."""
        rows = cls(f"rows_{uuid.uuid4().hex}")
        source = arrow_table(source) if isinstance(source, pd.DataFrame) else source
        with scratch() as con:
            con.register("incoming_source", source)
            try:
                con.execute(f"CREATE TABLE {rows.name} AS {select.format(source='incoming_source')}", params or {})
            finally:
                con.unregister("incoming_source")
        return rows

    def query(self, sql: str, params: dict | None = None,
              fetch: Callable[[duckdb.DuckDBPyConnection], T] = lambda result: result.fetchall()) -> T:
        """`fetch` the result of `sql`, where `{rows}` is this table."""
        with scratch() as con:
            return fetch(con.execute(sql.format(rows=self.name), params or {}))

    @property
    def num_rows(self) -> int:
        return self.query("SELECT count(*) FROM {rows}")[0][0]

    @property
    def column_names(self) -> list[str]:
        return [name for name, *_ in self.query("DESCRIBE {rows}")]

    def counts(self) -> dict[str, int]:
        """Rows per partition."""
        return dict(self.query(f"SELECT {quote(PARTITION)}, count(*) FROM {{rows}} GROUP BY ALL"))

    def to_arrow(self, where: str = "TRUE", params: dict | None = None) -> pyarrow.Table:
        """Some rows (all by default) out of DuckDB, in their order."""
        return self.query(f"SELECT * FROM {{rows}} WHERE {where} ORDER BY rowid", params,
                          lambda result: result.to_arrow_table())

    def to_pandas(self) -> pd.DataFrame:
        return self.to_arrow().to_pandas()

    def stream(self, where: str = "TRUE", params: dict | None = None) -> pyarrow.RecordBatchReader:
        """Some rows as a stream of Arrow batches, for another database to read (once): the commit inserts a chunk
        batch by batch, never holding it whole. (Its cursor lives as long as this Rows.)"""
        self._streaming = scratch_database().cursor()
        return self._streaming.execute(f"SELECT * FROM {self.name} WHERE {where}", params or {}) \
            .to_arrow_reader(BATCH_ROWS)

    def delete(self, where: str, params: dict | None = None) -> None:
        with scratch() as con:
            con.execute(f"DELETE FROM {self.name} WHERE {where}", params or {})

    def take_out(self, rowids: np.ndarray) -> pyarrow.Table:
        """The rows with these rowids, out of DuckDB and out of this table (the quarantine split)."""
        with scratch() as con:
            con.register("taken_rowids", pyarrow.table({"id": pyarrow.array(rowids, pyarrow.int64())}))
            chosen = "rowid IN (SELECT id FROM taken_rowids)"  # a semi-join: as cheap for many rows as for few
            taken = con.execute(f"SELECT * FROM {self.name} WHERE {chosen} ORDER BY rowid").to_arrow_table()
            if len(rowids):
                con.execute(f"DELETE FROM {self.name} WHERE {chosen}")
        return taken


def _drop(pid: int, name: str) -> None:
    if pid == os.getpid():  # never a parent's table, after a fork
        try:
            with scratch() as con:
                con.execute(f"DROP TABLE IF EXISTS {name}")
        except duckdb.Error:  # the process is ending and the database with it
            pass
