"""A table as a domain declares it: `TableSpec`, made by the two decorators a domain writes with.

`production_asset` (a pure pandas function) and `sql_asset` (a DuckDB SQL file) each return a `TableSpec`,
which a domain lists (pipelines/domain.py) and pipelines/factory.py turns into a Dagster asset. A pandas
spec is still its function: `staging_orders(raw_orders=frame)` returns a DataFrame in a test.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import json
import linecache
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pandera.pandas as pa

from pipelines.quality import (
    SOURCE_COVERAGE,
    Acknowledgement,
    Rule,
    contract_metadata,
    contract_version,
    rules_of,
    with_acknowledgements,
)
from pipelines.sources import Source
from pipelines.sql import DUCKDB_TYPES, quote

FACTORY_VERSION = "1"  # bump when the factory changes what it writes for the same transform
PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, eq=False)
class TableSpec:
    """Everything the factory knows about one warehouse table. A pandas spec calls its transform."""

    table: str
    contract: type[pa.DataFrameModel]
    inputs: tuple[TableSpec, ...] = ()
    source: Source | None = None
    transform: Callable[..., pd.DataFrame] | None = None
    sql: str | None = None
    sql_path: Path | None = None
    partitions: dg.DailyPartitionsDefinition | None = None
    daily_on: str | None = None
    """SQL expression over the table's columns that gives a row's local date: its partition."""
    key_columns: tuple[str, ...] = ()
    group: str | None = None
    column_lineage: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    owners: tuple[str, ...] = ()
    freshness: dg.FreshnessPolicy | None = None
    acknowledged: tuple[Acknowledgement, ...] = ()
    """Known defects the team accepts for a while (pipelines/quality/rules.py): not part of the code version."""

    def __post_init__(self) -> None:
        if (self.partitions is None) != (self.daily_on is None):
            raise ValueError(f"{self.table}: a partitioned table needs both partitions= and daily_on=")
        if self.acknowledged:
            _ = self.rules  # an acknowledgement of no rule, or of a blocking one, fails here, when defined
        counted = contract_metadata(self.contract).get("row_count_matches")
        if counted and counted not in {i.table for i in self.inputs}:
            raise ValueError(f"{self.table}: row_count_matches names {counted}, which is not one of its inputs")

    def __call__(self, **frames: pd.DataFrame) -> pd.DataFrame:
        """The transform as a plain function of its input frames (by parameter name: `raw_orders` for raw.orders).
        A SQL asset runs its SQL on them in a DuckDB of its own, over every day they hold."""
        if self.transform is not None:
            return self.transform(**frames)
        with duckdb.connect() as con:
            con.execute("SET TimeZone = 'UTC'")  # as the warehouse's sessions
            for upstream in self.inputs:
                name = upstream.table.replace(".", "_")
                if name not in frames:
                    raise TypeError(f"{self.table} reads {upstream.table}: pass it as {name}=")
                con.register(name, frames[name])
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(upstream.table.split('.')[0])}")
                con.execute(f"CREATE VIEW {quote(upstream.table)} AS SELECT * FROM {quote(name)}")
            every_day = {"partition_start": date.min, "partition_end": date.max}
            return con.execute(self.sql, {k: v for k, v in every_day.items() if f"${k}" in self.sql}).df()

    @property
    def key(self) -> dg.AssetKey:
        return dg.AssetKey(self.table.split("."))

    @property
    def partitioned(self) -> bool:
        return self.partitions is not None

    @cached_property
    def rules(self) -> list[Rule]:
        rules = rules_of(self.contract) + ([SOURCE_COVERAGE] if self.source and self.partitioned else [])
        return with_acknowledgements(rules, list(self.acknowledged), self.table)

    @property
    def contract_version(self) -> str:
        return contract_version(self.contract)

    @cached_property
    def columns(self) -> dict[str, str]:
        """Column name -> DuckDB type, in contract order."""
        schema = self.contract.to_schema()
        return {
            name: (column.metadata or {}).get("sql_type") or DUCKDB_TYPES[str(column.dtype)]
            for name, column in schema.columns.items()
        }

    @property
    def source_file(self) -> str:
        where = self.sql_path or (inspect.getsourcefile(self.transform) if self.transform else None)
        return str(Path(where).resolve().relative_to(PROJECT_ROOT)) if where else ""

    @cached_property
    def code_version(self) -> str:
        """Changes when the transform, SQL, contract or the factory's own write format change."""
        parts = [
            FACTORY_VERSION, self.table, self.daily_on or "", ",".join(i.table for i in self.inputs),
            self.source.name if self.source else "",
            self.sql or (inspect.getsource(self.transform) if self.transform else ""),
            class_source(self.contract), json.dumps(self.columns),
        ]
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]

    @cached_property
    def column_schema(self) -> dg.TableSchema:
        """The columns as Dagster shows them: types from the contract, descriptions from its fields."""
        schema = self.contract.to_schema()
        return dg.TableSchema(columns=[
            dg.TableColumn(name, sql_type, description=schema.columns[name].description,
                           constraints=dg.TableColumnConstraints(
                               nullable=schema.columns[name].nullable, unique=schema.columns[name].unique))
            for name, sql_type in self.columns.items()
        ])

    @property
    def description(self) -> str:
        doc = (inspect.getdoc(self.transform) if self.transform else None) or inspect.getdoc(self.contract) or ""
        return doc.strip()

    def partition_expr_of(self, table: str) -> str | None:
        """The partition expression of this table or one of its inputs."""
        return next(s.daily_on for s in (self, *self.inputs) if s.table == table)


def class_source(cls: type) -> str:
    """`inspect.getsource(cls)`, the same text, with each file parsed once: inspect parses the whole module
    again for every class it is asked about (most of the time it takes to load the definitions)."""
    file = inspect.getsourcefile(cls)
    start = _class_starts(file).get(cls.__qualname__) if file else None
    if start is None:  # a nested or generated class: inspect's own search
        return inspect.getsource(cls)
    return "".join(inspect.getblock(linecache.getlines(file)[start:]))


@functools.cache
def _class_starts(file: str) -> dict[str, int]:
    """A file's top-level classes: name -> the line (0-based) where inspect starts its source (its first
    decorator, if any; the first definition of a name, as inspect finds it)."""
    starts: dict[str, int] = {}
    for node in ast.parse("".join(linecache.getlines(file))).body:
        if isinstance(node, ast.ClassDef):
            starts.setdefault(node.name, (node.decorator_list[0] if node.decorator_list else node).lineno - 1)
    return starts


def production_asset(
    table: str,
    *,
    contract: type[pa.DataFrameModel],
    inputs: Sequence[TableSpec] = (),
    source: Source | None = None,
    partitions: dg.DailyPartitionsDefinition | None = None,
    daily_on: str | None = None,
    key_columns: Sequence[str] = (),
    column_lineage: dict[str, list[tuple[str, str]]] | None = None,
    group: str | None = None,
    freshness: dg.FreshnessPolicy | None = None,
    acknowledged: Sequence[Acknowledgement] = (),
) -> Callable[[Callable[..., pd.DataFrame]], TableSpec]:
    """A pandas asset. The function is pure: it gets its inputs as DataFrames, by parameter name
    (`raw_orders` for raw.orders; the source's name for `source=`, already cut to the partitions
    being built), and returns the rows to write. A source's rows come with a `_source_line` column (their
    line in the file): a transform that passes rows through keeps it, and failures then name the line; one
    that aggregates rows should drop it. It is never written."""

    def wrap(transform: Callable[..., pd.DataFrame]) -> TableSpec:
        return TableSpec(
            table, contract, tuple(inputs), source, transform=transform, partitions=partitions, daily_on=daily_on,
            key_columns=tuple(key_columns), group=group, column_lineage=dict(column_lineage or {}), freshness=freshness,
            acknowledged=tuple(acknowledged),
        )

    return wrap


def sql_asset(
    table: str,
    *,
    sql: str,
    contract: type[pa.DataFrameModel],
    inputs: Sequence[TableSpec],
    partitions: dg.DailyPartitionsDefinition | None = None,
    daily_on: str | None = None,
    key_columns: Sequence[str] = (),
    group: str | None = None,
    relative_to: str | None = None,
    freshness: dg.FreshnessPolicy | None = None,
    acknowledged: Sequence[Acknowledgement] = (),
) -> TableSpec:
    """A SQL asset: the file is a DuckDB SELECT over the input tables. A partitioned one selects the
    days in [$partition_start, $partition_end) (bound as DATEs, never formatted in): one day, or a range."""
    base = Path(relative_to).parent if relative_to else PROJECT_ROOT
    sql_path = (base / sql).resolve()
    return TableSpec(
        table, contract, tuple(inputs), sql=sql_path.read_text(), sql_path=sql_path, partitions=partitions,
        daily_on=daily_on, key_columns=tuple(key_columns), group=group, freshness=freshness,
        acknowledged=tuple(acknowledged),
    )
