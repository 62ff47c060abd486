"""The asset factory: the only wrapper that turns a transformation into a production asset.

    read -> transform -> validate -> commit -> version -> lineage

`production_asset` (a pandas function) and `sql_asset` (a DuckDB SQL file) declare a table: each
returns a `TableSpec`, which a domain lists and pipelines/definitions.py turns into a Dagster asset
with `build_asset`. A pandas spec is still its function: `staging_orders(raw_orders=frame)`.

The asset's compute, for one partition or a range of partitions at once (set-based):
1. emits lineage START, one OpenLineage run per partition;
2. leaves out the partitions whose upstream partition's latest blocking check failed (cross-run
   blocking; override: PROVLINE_ALLOW_FAILED_UPSTREAM or the run tag provline/allow_failed_upstream=true);
3. reads its inputs for the whole range (SQL with a range predicate, pandas on the range frame) and
   runs the pure transform once;
4. validates the result against its contract in one scan, with results per partition;
5. commits the valid partitions — rows, quarantined rows, failure cases, check results, one version-log
   row each — in one transaction; a partition that failed a blocking check keeps its previous version
   and only its check results and failure cases are recorded;
6. reports to Dagster per partition: a materialization with DataVersion = content hash and its
   metadata, and its asset check results;
7. emits lineage COMPLETE or FAIL per partition.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import re
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pandera.pandas as pa

from pipelines import monitor
from pipelines.lineage.model import ColumnSource
from pipelines.lineage.runs import record_cancel
from pipelines.lineage.step import StepLineage
from pipelines.monitor.landing import read_landed
from pipelines.quality import (
    BLOCKING,
    QUARANTINE,
    SOURCE_COVERAGE,
    SOURCE_COVERAGE_RULE,
    ContractViolation,
    MissingTable,
    Rule,
    RuleResult,
    Validation,
    contract_metadata,
    describe_failures,
    expected_rows,
    reference_values,
    rules_of,
    validate,
)
from pipelines.settings import get_settings
from pipelines.sources import (
    SOURCE_LINE,
    Source,
    SourceError,
    SourceTable,
    describe_outside,
    read_source,
    rows_outside,
)
from pipelines.sql import DUCKDB_TYPES, PARTITION, UNPARTITIONED, partition_label
from pipelines.warehouse import Receipt, Warehouse, Write, quarantine_table

FACTORY_VERSION = "1"  # bump when the factory changes what it writes for the same transform
PROJECT_ROOT = Path(__file__).resolve().parent.parent
ALLOW_FAILED_UPSTREAM_TAG = "provline/allow_failed_upstream"
UPSTREAM_FAILED = "upstream_failed"
"""Recorded (in quality.check_results, blocking) for a partition left out because an upstream partition
failed: its own downstream then leaves it out too, in this run and later ones, naming the first cause."""
PREVIEW_ROWS = 5
TRANSIENT_RETRIES = 1
"""An unexpected error (a lock, a disk) is retried once, by the factory raising RetryRequested: an asset
RetryPolicy would do the same, but Dagster also applies it to an interrupted step, re-running what the
operator just stopped."""
_EVENTS_REPORTED = "__source_asset_observation__"  # dagster/_core/definitions/source_asset.py (1.13)


class _ChecksReportedPerPartition(logging.Filter):
    """A range step reports its check results per partition (AssetCheckEvaluation events) instead of as the
    check outputs Dagster gates steps on, and blocks failed partitions downstream itself; Dagster's notice
    that the next step "will proceed without gating" on those outputs is expected, not a problem."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "will proceed without gating" not in record.getMessage()


logging.getLogger("dagster._core.execution.plan.active").addFilter(_ChecksReportedPerPartition())


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

    def __post_init__(self) -> None:
        if (self.partitions is None) != (self.daily_on is None):
            raise ValueError(f"{self.table}: a partitioned table needs both partitions= and daily_on=")
        counted = contract_metadata(self.contract).get("row_count_matches")
        if counted and counted not in {i.table for i in self.inputs}:
            raise ValueError(f"{self.table}: row_count_matches names {counted}, which is not one of its inputs")

    def __call__(self, **frames: pd.DataFrame) -> pd.DataFrame:
        """The transform as a plain function of its input frames."""
        if self.transform is None:
            raise TypeError(f"{self.table} is a SQL asset: run {self.sql_path} in DuckDB")
        return self.transform(**frames)

    @property
    def key(self) -> dg.AssetKey:
        return dg.AssetKey(self.table.split("."))

    @property
    def partitioned(self) -> bool:
        return self.partitions is not None

    @cached_property
    def rules(self) -> list[Rule]:
        return rules_of(self.contract) + ([SOURCE_COVERAGE] if self.source and self.partitioned else [])

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
            inspect.getsource(self.contract), json.dumps(self.columns),
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
) -> TableSpec:
    """A SQL asset: the file is a DuckDB SELECT over the input tables. A partitioned one selects the
    days in [$partition_start, $partition_end) (bound as DATEs, never formatted in): one day, or a range."""
    base = Path(relative_to).parent if relative_to else PROJECT_ROOT
    sql_path = (base / sql).resolve()
    return TableSpec(
        table, contract, tuple(inputs), sql=sql_path.read_text(), sql_path=sql_path, partitions=partitions,
        daily_on=daily_on, key_columns=tuple(key_columns), group=group, freshness=freshness,
    )


def build_asset(spec: TableSpec) -> dg.AssetsDefinition:
    with warnings.catch_warnings():  # partitioned checks (preview) and backfill policies (beta) are used knowingly
        warnings.simplefilter("ignore", (dg.BetaWarning, dg.PreviewWarning))
        return _build_asset(spec)


def _build_asset(spec: TableSpec) -> dg.AssetsDefinition:
    check_specs = [
        dg.AssetCheckSpec(
            check, asset=spec.key, partitions_def=spec.partitions,
            blocking=any(r.behaviour == BLOCKING for r in rules),
            description="; ".join(f"[{r.behaviour}] {r.description}" for r in rules),
        )
        for check, rules in _by_check(spec.rules).items()
    ] + monitor.check_specs(spec)

    # A one-asset multi_asset: its outputs are Nothing-typed (no IO manager: the factory writes) and,
    # being subsettable, its check outputs are optional, so a range reports each partition itself.
    @dg.multi_asset(
        name=spec.key.to_python_identifier(),
        specs=[dg.AssetSpec(
            spec.key,
            deps=[i.key for i in spec.inputs],
            partitions_def=spec.partitions,
            group_name=spec.group,
            code_version=spec.code_version,
            description=spec.description,
            # the graph labels a node with its key's last part only (two "weather" nodes): the key's schema
            # (raw, staging, marts) as a kind puts the layer on the node, as a badge
            kinds={"duckdb", "sql" if spec.sql else "pandas", *spec.key.path[:-1]},
            metadata=_definition_metadata(spec),
            freshness_policy=spec.freshness,
        )],
        check_specs=check_specs,
        partitions_def=spec.partitions,
        backfill_policy=dg.BackfillPolicy.single_run() if spec.partitioned else None,
        can_subset=True,
        required_resource_keys={"warehouse"},
    )
    def _asset(context):  # (no annotation: Dagster inspects it, and annotations here are strings)
        return (yield from materialize(spec, context, context.resources.warehouse))

    return _asset


def _definition_metadata(spec: TableSpec) -> dict:
    """What the UI shows of the asset before any run."""
    contract = f"checks/{Path(inspect.getsourcefile(spec.contract)).name}::{spec.contract.__name__}"
    return {
        "dagster/column_schema": spec.column_schema,
        "dagster/table_name": spec.table,
        "contract": contract,
        "transform": spec.source_file,
        "audit": f"provline lineage upstream {spec.table}; provline audit report {spec.table} --out report.html",
    }


# --- one materialization: read -> transform -> validate ------------------------------------


@dataclass
class Inputs:
    """What a materialization read, per partition where it differs."""

    versions: dict[str, dict[str, str]]  # partition -> {input table or "source:<file>": content hash}
    blocked: dict[str, str]  # partition -> why it cannot be built (an upstream partition failed)
    causes: dict[str, str]  # partition -> the first cause of that (an upstream's failed check, in words)
    previous: dict[str, dict]  # partition -> this table's previous version-log row
    reference_values: dict[str, set] = field(default_factory=dict)
    expected_rows: dict[str, int] | None = None
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    source: SourceTable | None = None


@dataclass
class Derived:
    """What one materialization computes from its inputs, before anything is written."""

    partitions: list[str]  # the partitions asked for
    inputs: Inputs
    frame: pd.DataFrame  # the transform's rows, with a PARTITION column
    validation: Validation

    @cached_property
    def built(self) -> list[str]:
        """The partitions validated (not blocked by an upstream failure)."""
        return [p for p in self.partitions if p not in self.inputs.blocked]

    @property
    def refused(self) -> list[str]:
        return self.validation.failed_partitions

    @cached_property
    def previews(self) -> dict[str, str]:
        """Per partition, its first valid rows as a markdown table (one grouped pass over a range)."""
        valid = self.validation.valid
        head = valid.groupby(PARTITION, sort=False).head(PREVIEW_ROWS)
        columns = [c for c in valid.columns if c != PARTITION]
        text = head[columns].astype("string").fillna("")
        previews = {}
        for partition, row in zip(head[PARTITION], text.itertuples(index=False), strict=True):
            previews.setdefault(partition, "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n")
            previews[partition] += "| " + " | ".join(row) + " |\n"
        return previews

    @cached_property
    def written(self) -> list[str]:
        refused = set(self.refused)
        return [p for p in self.built if p not in refused]


def derive(
    spec: TableSpec, warehouse: Warehouse, partitions: list[str], *, allow_failed_upstream: bool = False,
    log=None, on_inputs: Callable[[Inputs], None] | None = None,
) -> Derived:
    """Read the inputs, run the pure transform, validate: for one partition or a range. Used by
    materialize and by `provline verify` (on a scratch warehouse holding the recorded input versions)."""
    with warehouse.connect() as con:
        inputs = _read_inputs(spec, warehouse, con, partitions, allow_failed_upstream, log)
        built = [p for p in partitions if p not in inputs.blocked]
        frame = con.execute(spec.sql, _sql_params(spec, built)).df() if spec.sql and built else None
    problems: dict[str, dict[str, str]] = {}
    outside, source = None, None
    if spec.source and built:
        source = read_landed(spec, built) or read_source(spec.source, spec.contract)
        rows = source.numbered()
        if spec.partitioned:
            labels = _partition_keys(source.frame, spec.daily_on)
            if len(strays := rows_outside(labels, spec.partitions)):  # kept out at the source, blocking nothing
                message = describe_outside(source, strays, spec.partitions)
                problems = {p: {SOURCE_COVERAGE_RULE: message} for p in built}
                outside = _outside_cases(spec, source, strays)
                if log is not None:
                    log.warning(message)
            rows = rows[pd.Series(labels).isin(built).to_numpy()]
        inputs.frames[spec.source.name] = rows
        inputs.source = source
        for p in built:
            inputs.versions.setdefault(p, {})[f"source:{source.path.name}"] = source.content_hash
        if source.extra_columns and log is not None:
            log.warning(f"{source.path}: extra column(s) not in the contract, dropped: {source.extra_columns}")
    if on_inputs is not None:
        on_inputs(inputs)
    if frame is None:
        frame = _call(spec, inputs.frames) if built else pd.DataFrame(columns=list(spec.columns))
    frame = _with_partitions(spec, frame, partitions, built)
    # a raw transform passes its rows' source lines through; they name failing rows and are never written
    lines = frame.pop(SOURCE_LINE) if SOURCE_LINE in frame else None
    validation = validate(
        frame, spec.contract, key_columns=spec.key_columns, partitions=built, reference_values=inputs.reference_values,
        expected_rows=inputs.expected_rows, previous=inputs.previous, columns=spec.columns, rules=spec.rules,
        problems=problems, row_sources=source.locations(lines) if lines is not None else None, outside=outside,
    )
    return Derived(partitions, inputs, frame, validation)


def write_for(spec: TableSpec, derived: Derived, run_id: str, partitions: list[str]) -> Write:
    """The write of some of the derived partitions (the valid ones; or the refused ones, for their checks)."""
    validation = derived.validation
    return Write(
        table=spec.table, partition_expr=spec.daily_on, columns=spec.columns, code_version=spec.code_version,
        run_id=run_id, partitions=partitions,
        rows=validation.valid[validation.valid[PARTITION].isin(partitions)],
        quarantined=validation.quarantined[validation.quarantined[PARTITION].isin(partitions)],
        failures=validation.failures[validation.failures[PARTITION].isin(partitions)],
        input_versions={p: derived.inputs.versions.get(p, {}) for p in partitions},
        check_results={p: _stored_results(validation.results[p], spec.table, p) for p in partitions},
    )


def _read_inputs(spec, warehouse, con, partitions, allow, log) -> Inputs:
    inputs = Inputs(versions={p: {} for p in partitions}, blocked={}, causes={},
                    previous=warehouse.latest_versions(con, spec.table, partitions))
    for upstream in spec.inputs:
        if not warehouse.table_exists(con, upstream.table):
            raise MissingTable(f"{spec.table} needs {upstream.table}, which has never been materialized: "
                               "materialize it first")
        theirs = partitions if upstream.partitioned else [UNPARTITIONED]
        failed = warehouse.blocking_failures(con, upstream.table, theirs)
        versions = warehouse.latest_versions(con, upstream.table, theirs)
        for partition in partitions:
            their = partition if upstream.partitioned else UNPARTITIONED
            inputs.versions[partition][upstream.table] = versions.get(their, {}).get("content_hash", "")
            if their in failed and not allow and partition not in inputs.blocked:
                inputs.blocked[partition], inputs.causes[partition] = _refusal(spec, upstream, their, failed[their])
        if failed and allow and log is not None:
            log.warning(f"building from {upstream.table} despite its failed blocking checks (override set)")
    built = [p for p in partitions if p not in inputs.blocked]
    if spec.transform is not None and built:
        for upstream in spec.inputs:
            theirs = built if upstream.partitioned else [UNPARTITIONED]
            inputs.frames[upstream.table.replace(".", "_")] = warehouse.read(con, upstream.table, theirs,
                                                                             upstream.daily_on)
    inputs.reference_values = reference_values(con, spec.table, spec.contract)
    inputs.expected_rows = expected_rows(con, spec.contract, built, spec.partition_expr_of) if built else None
    return inputs


def _refusal(spec: TableSpec, upstream: TableSpec, partition: str, failed: list[tuple]) -> tuple[str, str]:
    """Why `spec` will not build from `upstream` [partition], and the first cause (an upstream partition that
    failed its own checks; carried along a chain of partitions left out)."""
    checks = ", ".join(f"{check} ({rows} rows)" for check, rows, _, _ in failed)
    cause = "; ".join(message or check for check, _, _, message in failed)
    return (f"{spec.table} refuses to build from {upstream.table} [{partition or 'unpartitioned'}]: its latest "
            f"validation (run {failed[0][2]}) failed blocking check(s) {checks}; cause: {cause}. Fix and "
            f"re-materialize {upstream.table}, or override with PROVLINE_ALLOW_FAILED_UPSTREAM=true or the run tag "
            f"{ALLOW_FAILED_UPSTREAM_TAG}=true.", cause)


def _sql_params(spec: TableSpec, partitions: list[str]) -> dict:
    """The SQL's range: [first day, day after the last) of the partitions being built."""
    if not spec.partitioned:
        return {}
    first, last = min(partitions), max(partitions)
    end = (pd.Timestamp(last) + pd.Timedelta(days=1)).date()
    params = {"partition_start": pd.Timestamp(first).date(), "partition_end": end}
    return {name: value for name, value in params.items() if f"${name}" in spec.sql}


def _call(spec: TableSpec, frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    kwargs = {}
    for name in inspect.signature(spec.transform).parameters:
        if name not in frames:
            raise TypeError(f"{spec.transform.__name__}() asks for {name!r}, not one of its inputs {sorted(frames)}")
        kwargs[name] = frames[name]
    return spec(**kwargs)


def _partition_keys(frame: pd.DataFrame, partition_expr: str) -> np.ndarray:
    """Each row's daily partition key (None when its date is invalid), computed by DuckDB."""
    with duckdb.connect() as con:
        con.register("partition_rows", frame)
        column = next(iter(con.execute(f"SELECT {partition_label(partition_expr, tolerant=True)} "
                                       "FROM partition_rows").fetchnumpy().values()))
    keys = np.ma.getdata(column).astype(object)
    keys[np.ma.getmaskarray(column)] = None
    return keys


def _outside_cases(spec: TableSpec, source: SourceTable, positions: np.ndarray) -> pd.DataFrame:
    """The failure cases of source rows that belong to no partition: the columns that date a row and their
    values, the row's key, its file and line."""
    rows = source.frame.iloc[positions].astype("string").fillna("None")
    dated = [c for c in spec.columns if c in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", spec.daily_on)]
    return pd.DataFrame({
        "rule": SOURCE_COVERAGE_RULE,
        "column": ", ".join(dated),
        "failure_case": [", ".join(f"{c}={v}" for c, v in zip(dated, row, strict=True))
                         for row in rows[dated].itertuples(index=False)],
        "row_key": ["|".join(row) or None for row in rows[list(spec.key_columns)].itertuples(index=False)],
        "source": source.locations(positions + source.first_line),
    })


def _with_partitions(spec: TableSpec, frame: pd.DataFrame, partitions: list[str], built: list[str]) -> pd.DataFrame:
    """The transform's rows labelled with their partition; rows of blocked partitions are left out. A row
    outside the partitions asked for is a bug in the transform, not bad data: it fails the step."""
    if not spec.partitioned:
        return frame.assign(**{PARTITION: UNPARTITIONED})
    keys = pd.Series(_partition_keys(frame, spec.daily_on), index=frame.index)
    stray = ~keys.isin(partitions)
    if stray.any():
        raise ValueError(f"{spec.table}: the transform returned {int(stray.sum())} row(s) outside the partitions "
                         f"being built (e.g. partition {keys[stray].iloc[0]!r}); it must only return rows of its "
                         f"inputs' partitions")
    return frame.assign(**{PARTITION: keys})[keys.isin(built)]


def _stored_results(results: list[RuleResult], table: str, partition: str) -> list[dict]:
    return [
        {"check_name": r.rule.name, "severity": r.rule.behaviour, "passed": r.passed, "blocking": r.blocking,
         "failing_rows": r.failing_rows, "message": None if r.passed else _finding(r, table, partition)}
        for r in results
    ]


def _finding(result: RuleResult, table: str, partition: str) -> str:
    """A failed rule in words: where, and the table-level finding or a failing value."""
    return f"{table} [{partition or 'unpartitioned'}] failed {result.rule.name}: {result.finding()}"


def _blocked_write(spec: TableSpec, derived: Derived, run_id: str) -> Write:
    """The record of partitions left out because an upstream partition failed (see UPSTREAM_FAILED)."""
    blocked = list(derived.inputs.blocked)
    return Write(
        table=spec.table, partition_expr=spec.daily_on, columns=spec.columns, code_version=spec.code_version,
        run_id=run_id, partitions=blocked, rows=pd.DataFrame(),
        check_results={p: [{"check_name": UPSTREAM_FAILED, "severity": BLOCKING, "passed": False, "blocking": True,
                            "failing_rows": 0, "message": derived.inputs.causes[p]}]
                       for p in blocked},
    )


# --- one materialization: commit and report ------------------------------------------------


def materialize(spec: TableSpec, context: dg.AssetExecutionContext, warehouse: Warehouse):
    partitions = list(context.partition_keys) if spec.partitioned else [UNPARTITIONED]
    single = len(partitions) == 1
    lineage = StepLineage(spec, context, partitions, warehouse.lineage_namespace)
    lineage.started()
    allow = get_settings().allow_failed_upstream or (
        context.run.tags.get(ALLOW_FAILED_UPSTREAM_TAG, "").lower() == "true"
    )
    column_lineage = _column_lineage_metadata(lineage.column_lineage[0])
    built: list[tuple[Derived, dict[str, Receipt]]] = []
    # a long range is built a chunk of days at a time: memory stays bounded, results are the same
    for chunk in _chunks(partitions, get_settings().range_chunk_days):
        derived, receipts = _build(spec, context, warehouse, chunk, allow, lineage, single)
        monitors = monitor.evaluate(spec, warehouse, derived, receipts, context.run_id)
        lineage.finished(derived, receipts, monitors)
        yield from _report(spec, context, derived, receipts, single, column_lineage, monitors)
        built.append((derived, receipts))
    context.log.info(_written_summary(spec, {p: r for _, receipts in built for p, r in receipts.items()}))
    if any(derived.refused or derived.inputs.blocked for derived, _ in built):
        summary = _failure_summary(spec, [derived for derived, _ in built])
        if single or not any(derived.written for derived, _ in built) or not _downstream_in_run(spec, context):
            raise dg.Failure(description=summary, allow_retries=False)
        # a range carries on: downstream builds the other partitions and leaves these out (blocked);
        # the last assets of the run fail it, naming every partition left out and why
        context.log.error(summary)
    if not single:
        yield _range_output(spec)


def _chunks(partitions: list[str], size: int) -> list[list[str]]:
    return [partitions[i:i + size] for i in range(0, len(partitions), size)]


def _build(
    spec: TableSpec, context: dg.AssetExecutionContext, warehouse: Warehouse, partitions: list[str], allow: bool,
    lineage: StepLineage, single: bool,
) -> tuple[Derived, dict[str, Receipt]]:
    """Derive and commit some partitions: the valid ones written, the refused and blocked ones recorded."""
    derived = None
    try:
        derived = derive(spec, warehouse, partitions, allow_failed_upstream=allow, log=context.log,
                         on_inputs=lambda inputs: lineage.inputs_known(inputs.versions, inputs.source))
        if derived.inputs.blocked:
            warehouse.record_failures(_blocked_write(spec, derived, context.run_id))
        if single and not derived.built:  # blocked by its upstream: nothing to run
            raise dg.Failure("\n".join(derived.inputs.blocked.values()), allow_retries=False)
        if derived.refused:
            warehouse.record_failures(write_for(spec, derived, context.run_id, derived.refused))
        written = derived.written
        return derived, warehouse.commit(write_for(spec, derived, context.run_id, written)) if written else {}
    except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt):  # Ctrl-C, or the run was canceled
        lineage.aborted()
        record_cancel(context.instance, context.run_id)
        raise  # the step ends here, and the run with it: nothing retries an interrupt (see TRANSIENT_RETRIES)
    except Exception as error:
        lineage.failed(str(error), traceback.format_exc(), derived.validation if derived else None)
        if isinstance(error, dg.Failure):
            raise
        if isinstance(error, ContractViolation | SourceError | MissingTable):
            # bad data: a retry would fail the same way
            raise dg.Failure(description=str(error), allow_retries=False) from error
        raise dg.RetryRequested(max_retries=TRANSIENT_RETRIES, seconds_to_wait=1) from error


def _report(spec: TableSpec, context: dg.AssetExecutionContext, derived: Derived, receipts: dict[str, Receipt],
            single: bool, column_lineage: dg.TableColumnLineage | None, monitors: monitor.Monitors):
    """The Dagster events: per partition, its check results (the contract's, then the anomaly monitors') and
    (when written) its materialization. A run of one partition goes Dagster's own way (its events carry input
    provenance); a range reports each itself."""
    validation = derived.validation
    if single:
        (partition,) = derived.partitions
        checks = _check_results(spec, validation.results[partition], partition) + monitors.check_results(partition)
        if partition in receipts:
            yield dg.MaterializeResult(
                data_version=dg.DataVersion(receipts[partition].content_hash),
                metadata=_metadata(spec, derived, partition, receipts[partition], column_lineage),
                check_results=checks,
            )
        else:
            yield from checks
        return
    for partition in derived.written:
        receipt = receipts[partition]
        yield dg.AssetMaterialization(
            asset_key=spec.key, partition=partition,
            metadata=_metadata(spec, derived, partition, receipt, column_lineage),
            tags={"dagster/data_version": receipt.content_hash, "dagster/code_version": spec.code_version},
        )
    targets = _materializations(context, spec, derived.written, derived.refused)
    for partition in derived.built:
        for result in _check_results(spec, validation.results[partition], partition) + \
                monitors.check_results(partition):
            yield dg.AssetCheckEvaluation(
                asset_key=spec.key, check_name=result.check_name, passed=result.passed,
                metadata=result.metadata, severity=result.severity, partition=partition,
                target_materialization_data=targets.get(partition),
                blocking=False,  # the factory blocks the partition downstream itself (see materialize)
            )


def _materializations(
    context: dg.AssetExecutionContext, spec: TableSpec, written: list[str], refused: list[str]
) -> dict[str, dg.AssetCheckEvaluationTargetMaterializationData]:
    """The materialization each partition's checks evaluated: the one just recorded, or for a refused
    partition the previous version it keeps. (What Dagster looks up for a single partition's checks.)"""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData,
    )
    from dagster._core.storage.event_log.base import AssetRecordsFilter

    targets = {}
    for partitions in ([written] if written else []) + [[p] for p in refused]:  # the written ones are the newest
        records = context.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=spec.key, asset_partitions=partitions), limit=len(partitions)).records
        for record in records:
            partition = record.event_log_entry.dagster_event.partition
            targets.setdefault(partition, AssetCheckEvaluationTargetMaterializationData(
                storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp))
    return targets


def _written_summary(spec: TableSpec, receipts: dict[str, Receipt]) -> str:
    if len(receipts) == 1:
        (partition, receipt), = receipts.items()
        return (f"{spec.table} [{partition or 'unpartitioned'}]: {receipt.row_count} rows written, "
                f"{receipt.quarantined_count} quarantined, hash {receipt.content_hash}")
    rows = sum(r.row_count for r in receipts.values())
    quarantined = sum(r.quarantined_count for r in receipts.values())
    return f"{spec.table}: {len(receipts)} partitions written, {rows} rows, {quarantined} quarantined"


def _range_output(spec: TableSpec) -> dg.Output:
    """The asset's (Nothing) output after a range: downstream steps run. Its metadata key is Dagster's own
    marker that asset events were already reported by the step (each partition's materialization above);
    without it Dagster would copy one DataVersion onto every partition (dagster-io/dagster#34013)."""
    return dg.Output(None, output_name=spec.key.to_python_identifier(), metadata={_EVENTS_REPORTED: True})


def _downstream_in_run(spec: TableSpec, context: dg.AssetExecutionContext) -> bool:
    """Whether an asset that reads this one runs later in the same run."""
    layer = context.job_def.asset_layer
    return bool(layer.asset_graph.get(spec.key).child_keys & set(layer.selected_asset_keys))


def _failure_summary(spec: TableSpec, chunks: list[Derived]) -> str:
    refused = [(p, derived.validation.blocking(p)) for derived in chunks for p in derived.refused]
    blocked = {p: why for derived in chunks for p, why in derived.inputs.blocked.items()}
    if not blocked and len(refused) == sum(len(derived.partitions) for derived in chunks):
        return "\n".join(line for p, failed in refused for line in describe_failures(spec.table, p, failed))
    written = sum(len(derived.written) for derived in chunks)
    lines = [f"{spec.table}: {len(refused)} partition(s) refused, {len(blocked)} blocked by upstream, "
             f"{written} written"]
    for partition, failed in refused:
        lines += describe_failures(spec.table, partition, failed)
    lines += [f"{spec.table} [{p}] blocked: {why}" for p, why in blocked.items()]
    return "\n".join(lines)


def _by_check(items: list) -> dict[str, list]:
    """Rules (or their results) grouped by the Dagster check that reports them, in rule order."""
    groups: dict[str, list] = {}
    for item in items:
        groups.setdefault((item.rule if isinstance(item, RuleResult) else item).check, []).append(item)
    return groups


def _check_results(spec: TableSpec, results: list[RuleResult], partition: str) -> list[dg.AssetCheckResult]:
    return [_check_result(spec, check, group, partition) for check, group in _by_check(results).items()]


def _check_result(spec: TableSpec, check: str, results: list[RuleResult], partition: str) -> dg.AssetCheckResult:
    failed = [r for r in results if not r.passed]
    behaviour = results[0].rule.behaviour  # the rules a check reports together act alike
    metadata = {
        "rule": "; ".join(r.rule.description for r in results),
        "behaviour": behaviour,
        "failing_rows": sum(r.failing_rows for r in results),
        "failure_rate": round(max((r.failure_rate for r in results), default=0.0), 6),
    }
    if len(results) > 1:  # a group: which of its rules failed, and how often
        metadata["failed_rules"] = dg.MetadataValue.json({r.rule.name: r.failing_rows for r in failed})
    if behaviour == QUARANTINE:
        metadata["quarantined_rows"] = sum(r.failing_rows for r in results)
        metadata.update(_quarantine_metadata(spec, partition))
    if problems := [f"{r.rule.name}: {r.message}" if len(results) > 1 else r.message for r in failed if r.message]:
        metadata["problem"] = "; ".join(problems)
    if sample := [case for r in failed for case in r.sample][:10]:
        metadata["sample"] = dg.MetadataValue.json(sample)
    return dg.AssetCheckResult(
        asset_key=spec.key, check_name=check, passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR if behaviour == BLOCKING else dg.AssetCheckSeverity.WARN,
        metadata=metadata,
    )


def _quarantine_metadata(spec: TableSpec, partition: str) -> dict:
    """Where a partition's quarantined rows are, and the command that lists them with their reasons."""
    flag = f" --partition {partition}" if partition else ""
    return {"quarantine_table": quarantine_table(spec.table),
            "quarantine_rows": f"provline quarantine show {spec.table}{flag}"}


def _metadata(spec: TableSpec, derived: Derived, partition: str, receipt: Receipt,
              column_lineage: dg.TableColumnLineage | None) -> dict:
    validation = derived.validation
    partition_flag = f" --partition {partition}" if partition else ""
    metadata = {
        "dagster/row_count": receipt.row_count,
        "dagster/column_schema": spec.column_schema,
        "content_hash": receipt.content_hash,
        "code_version": spec.code_version,
        "input_rows": receipt.row_count + receipt.quarantined_count,
        "quarantined_rows": receipt.quarantined_count,
        "warn_failures": sum(1 for r in validation.results[partition] if not r.passed and not r.blocking),
        "input_versions": dg.MetadataValue.json(derived.inputs.versions.get(partition, {})),
        "preview": dg.MetadataValue.md(derived.previews.get(partition, "")),
        "audit": f"provline verify {spec.table}{partition_flag}; "
                 f"provline audit report {spec.table}{partition_flag} --out report.html",
        **(_quarantine_metadata(spec, partition) if receipt.quarantined_count else {}),
    }
    if column_lineage is not None:
        metadata["dagster/column_lineage"] = column_lineage
    return metadata


def _column_lineage_metadata(fields: dict[str, list[ColumnSource]]) -> dg.TableColumnLineage | None:
    """Dagster's column lineage from the step's OpenLineage one: per output column, the input columns its
    value comes from (direct, or inside its expression such as a CASE condition). The inputs that shape the
    whole output (join keys, filters) have no place in Dagster's form and stay in OpenLineage."""
    deps = {
        column: [dg.TableColumnDep(asset_key=dg.AssetKey(dataset.split(".")), column_name=name)
                 for dataset, name in dict.fromkeys((s.dataset, s.column) for s in sources)]
        for column, sources in fields.items() if sources  # count(*) comes from no column
    }
    return dg.TableColumnLineage(deps_by_column=deps) if deps else None
