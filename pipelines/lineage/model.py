"""What the asset factory tells the lineage emitter about one materialization.

Plain data, no OpenLineage or Dagster types: the factory fills these in, `emitter.py` turns
them into OpenLineage events. Dataset names are warehouse table names (`<schema>.<table>`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, NamedTuple

Severity = Literal["error", "warn"]

# ColumnLineageDatasetFacet 1-2-0 transformation types and subtypes.
TransformationType = Literal["DIRECT", "INDIRECT"]
DirectSubtype = Literal["IDENTITY", "TRANSFORMATION", "AGGREGATION"]
IndirectSubtype = Literal["JOIN", "FILTER", "GROUP_BY", "SORT", "WINDOW", "CONDITIONAL"]


class Transformation(NamedTuple):
    """How an input column reaches an output column (or, INDIRECT, the whole output)."""

    type: TransformationType
    subtype: DirectSubtype | IndirectSubtype | None = None
    description: str | None = None


IDENTITY = Transformation("DIRECT", "IDENTITY")
TRANSFORMED = Transformation("DIRECT", "TRANSFORMATION")
AGGREGATED = Transformation("DIRECT", "AGGREGATION")


class ColumnSource(NamedTuple):
    """One input column of one output column. ``transformation`` None: not known (emitted without
    ``transformations``). The same input column may appear more than once with different
    transformations (e.g. INDIRECT CONDITIONAL and INDIRECT FILTER); the facet merges them."""

    dataset: str
    column: str
    transformation: Transformation | None = None


class IndirectSource(NamedTuple):
    """An input column that affects the whole output (join key, filter, grouping, sort): the
    facet's dataset-level ``dataset`` list, with transformation INDIRECT/``subtype``."""

    dataset: str
    column: str
    subtype: IndirectSubtype


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    description: str | None = None


@dataclass(frozen=True)
class DatasetRef:
    """A warehouse table (or one partition of it) at a data version."""

    name: str
    version: str | None = None
    partition: str | None = None


@dataclass(frozen=True)
class SourceFile:
    """A file read by a raw asset (PROVLINE_SOURCE_DIR or a domain's packaged data), at a content hash."""

    path: str
    version: str | None = None


@dataclass(frozen=True)
class Assertion:
    """One data-quality check result on the output."""

    name: str
    success: bool
    severity: Severity
    column: str | None = None
    expected: str | None = None
    actual: str | None = None


@dataclass(frozen=True)
class ColumnMetrics:
    null_count: int
    distinct_count: int
    sum: float | None = None
    count: int | None = None


@dataclass
class OutputInfo:
    """The table written by a materialization, as committed."""

    name: str
    version: str | None
    columns: list[Column]
    row_count: int
    column_lineage: dict[str, list[tuple[str, str] | ColumnSource]] = field(default_factory=dict)
    """output column -> [(input dataset name, input column[, transformation])]; plain pairs are accepted."""
    indirect_lineage: list[IndirectSource] = field(default_factory=list)
    """input columns that affect the whole output: join keys, filters, grouping and sort keys."""
    assertions: list[Assertion] = field(default_factory=list)
    column_metrics: dict[str, ColumnMetrics] = field(default_factory=dict)
    contract_version: str | None = None
    """The version of the data contract the rows were checked against (the custom `dataContract` facet)."""


@dataclass(frozen=True)
class AssetRun:
    """One (asset, partition, attempt) inside one Dagster run."""

    dagster_run_id: str
    dagster_job_name: str
    asset_key: str
    partition: str | None = None
    attempt: int = 1
    nominal_start: datetime | None = None
    nominal_end: datetime | None = None
    code_version: str | None = None
    sql: str | None = None
    source_path: str | None = None
    """Repo-relative path of the file that defines the transform."""
    description: str | None = None
    owners: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
