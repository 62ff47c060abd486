"""The asset factory: the only wrapper that turns a transformation into a production asset.

    transform -> validate -> write -> version -> lineage

`production_asset` (a pandas function) and `sql_asset` (a SQL file run by DuckDB) both build a
`TableSpec` and hand it to `build_asset`, which makes the Dagster asset. The compute it
generates, for one (asset, partition):

1. emits lineage START;
2. refuses to build from an upstream partition whose latest blocking check failed (cross-run
   blocking; override: PROVLINE_ALLOW_FAILED_UPSTREAM or the run tag
   provline/allow_failed_upstream=true);
3. reads its inputs from the warehouse (or its source file) and runs the pure transform;
4. validates the result against its checks/ contract;
5. commits the valid rows, quarantined rows, failure cases, check results and the version-log
   row in one DuckDB transaction — or, on a blocking failure, commits only the check results
   and failure cases and fails the step, leaving the previous version in place;
6. returns the Dagster result: DataVersion = content hash, metadata, asset check results;
7. emits lineage COMPLETE or FAIL.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from pathlib import Path

import dagster as dg
import pandas as pd
import pandera.pandas as pa

from checks.rules import ERROR, SOURCE_COVERAGE, SOURCE_COVERAGE_RULE, Rule, contract_metadata, rules_of
from pipelines.lineage import step as lineage_step
from pipelines.quality import ContractViolation, RuleResult, Validation, validate
from pipelines.settings import get_settings
from pipelines.sources import SourceError, read_source, rows_outside
from pipelines.warehouse import DUCKDB_TYPES, UNPARTITIONED, Warehouse, Write, quote

FACTORY_VERSION = "1"  # bump when the factory changes what it writes for the same transform
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DAILY_RANGE = (date(2013, 1, 1), date(2014, 1, 1))  # [start, end)
DAILY = dg.DailyPartitionsDefinition(start_date=DAILY_RANGE[0].isoformat(), end_date=DAILY_RANGE[1].isoformat())
ALLOW_FAILED_UPSTREAM_TAG = "provline/allow_failed_upstream"
PREVIEW_ROWS = 5


@dataclass(frozen=True)
class TableSpec:
    """Everything the factory knows about one warehouse table."""

    table: str
    contract: type[pa.DataFrameModel]
    inputs: tuple[str, ...] = ()
    source: str | None = None
    transform: Callable[..., pd.DataFrame] | None = None
    sql: str | None = None
    sql_path: Path | None = None
    daily_on: str | None = None
    """SQL expression over the table's columns that gives its local date: the partition."""
    key_columns: tuple[str, ...] = ()
    group: str | None = None
    column_lineage: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    owners: tuple[str, ...] = ()

    @property
    def key(self) -> dg.AssetKey:
        return dg.AssetKey(self.table.split("."))

    @property
    def partitioned(self) -> bool:
        return self.daily_on is not None

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
            FACTORY_VERSION, self.table, self.daily_on or "", ",".join(self.inputs), self.source or "",
            self.sql or (inspect.getsource(self.transform) if self.transform else ""),
            inspect.getsource(self.contract), json.dumps(self.columns),
        ]
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]

    @property
    def description(self) -> str:
        doc = (inspect.getdoc(self.transform) if self.transform else None) or inspect.getdoc(self.contract) or ""
        return doc.strip()


TABLES: dict[str, TableSpec] = {}


def _table_of(upstream: dg.AssetsDefinition | str) -> str:
    return upstream if isinstance(upstream, str) else ".".join(upstream.key.path)


def production_asset(
    table: str,
    *,
    contract: type[pa.DataFrameModel],
    inputs: list[dg.AssetsDefinition | str] = (),
    source: str | None = None,
    daily_on: str | None = None,
    key_columns: list[str] = (),
    column_lineage: dict[str, list[tuple[str, str]]] | None = None,
    group: str | None = None,
) -> Callable[[Callable[..., pd.DataFrame]], dg.AssetsDefinition]:
    """A pandas asset. The function is pure: it gets its inputs as DataFrames, by parameter
    name (`raw_flights` for raw.flights; the source table's name for `source=`), plus
    `partition_date` if it asks for it, and returns the rows to write."""

    def wrap(transform: Callable[..., pd.DataFrame]) -> dg.AssetsDefinition:
        return build_asset(TableSpec(
            table, contract, tuple(_table_of(i) for i in inputs), source, transform=transform,
            daily_on=daily_on, key_columns=tuple(key_columns), group=group,
            column_lineage=dict(column_lineage or {}),
        ))

    return wrap


def sql_asset(
    table: str,
    *,
    sql: str,
    contract: type[pa.DataFrameModel],
    inputs: list[dg.AssetsDefinition | str],
    daily_on: str | None = None,
    key_columns: list[str] = (),
    group: str | None = None,
    relative_to: str | None = None,
) -> dg.AssetsDefinition:
    """A SQL asset: the file is a DuckDB SELECT over the input tables; `$partition_date` is the
    partition's date (bound, never formatted in)."""
    base = Path(relative_to).parent if relative_to else PROJECT_ROOT
    sql_path = (base / sql).resolve()
    return build_asset(TableSpec(
        table, contract, tuple(_table_of(i) for i in inputs), sql=sql_path.read_text(), sql_path=sql_path,
        daily_on=daily_on, key_columns=tuple(key_columns), group=group,
    ))


def build_asset(spec: TableSpec) -> dg.AssetsDefinition:
    if spec.table in TABLES:
        raise ValueError(f"{spec.table} is defined twice")
    TABLES[spec.table] = spec
    check_specs = [
        dg.AssetCheckSpec(
            check, asset=spec.key, blocking=any(r.severity == ERROR and not r.quarantine for r in rules),
            description="; ".join(f"[{r.severity.upper()}] {r.description}" for r in rules),
        )
        for check, rules in _by_check(spec.rules).items()
    ]

    @dg.asset(
        key=spec.key,
        deps=[dg.AssetKey(name.split(".")) for name in spec.inputs],
        partitions_def=DAILY if spec.partitioned else None,
        group_name=spec.group or ("flights" if spec.partitioned else "reference"),
        code_version=spec.code_version,
        description=spec.description,
        check_specs=check_specs,
        kinds={"duckdb", "sql" if spec.sql else "pandas"},
        metadata={
            "dagster/column_schema": column_schema(spec),
            "dagster/table_name": f"{get_settings().warehouse_name}.{spec.table}",
            "contract": f"checks/{Path(inspect.getsourcefile(spec.contract)).name}::{spec.contract.__name__}",
            "transform": spec.source_file,
            "audit": f"provline lineage upstream {spec.table}; provline audit report {spec.table} --out report.html",
        },
        retry_policy=dg.RetryPolicy(max_retries=1, delay=1),
    )
    def _asset(context):  # (no annotation: Dagster inspects it, and annotations here are strings)
        return (yield from materialize(spec, context))

    return _asset


def column_schema(spec: TableSpec) -> dg.TableSchema:
    schema = spec.contract.to_schema()
    return dg.TableSchema(columns=[
        dg.TableColumn(name, sql_type, description=schema.columns[name].description,
                       constraints=dg.TableColumnConstraints(
                           nullable=schema.columns[name].nullable, unique=schema.columns[name].unique))
        for name, sql_type in spec.columns.items()
    ])


# --- one materialization -------------------------------------------------------------------


@dataclass
class _Inputs:
    frames: dict[str, pd.DataFrame]
    versions: dict[str, str]
    reference_values: dict[str, set]
    expected_rows: int | None
    previous: dict | None
    source_path: str | None = None


@dataclass
class Derived:
    """What one (asset, partition) computes from its inputs, before anything is written."""

    inputs: _Inputs
    frame: pd.DataFrame
    validation: Validation


def derive(
    spec: TableSpec, warehouse: Warehouse, partition: str, *, allow_failed_upstream: bool = False,
    log=None, on_inputs: Callable[[_Inputs], None] | None = None,
) -> Derived:
    """Read the inputs, run the pure transform, validate. Used by materialize and by `provline
    verify` (on a scratch warehouse holding the recorded input versions)."""
    with warehouse.connect() as con:
        inputs = _read_inputs(spec, warehouse, con, partition, allow_failed_upstream, log)
        frame = con.execute(spec.sql, _sql_params(spec.sql, partition)).df() if spec.sql else None
    problems = {}
    if spec.source:
        table = read_source(spec.source, spec.contract)
        if spec.partitioned and (outside := rows_outside(table, spec.daily_on, DAILY_RANGE)):
            problems[SOURCE_COVERAGE_RULE] = outside
        inputs.frames[spec.source] = table.frame
        inputs.versions[f"source:{table.path.name}"] = table.content_hash
        inputs.source_path = str(table.path)
        if table.extra_columns and log is not None:
            log.warning(f"{table.path}: extra column(s) not in the contract, dropped: {table.extra_columns}")
    if on_inputs is not None:
        on_inputs(inputs)
    if frame is None:
        frame = _call(spec.transform, inputs.frames, partition)
    validation = validate(
        frame, spec.contract, key_columns=list(spec.key_columns), reference_values=inputs.reference_values,
        expected_rows=inputs.expected_rows,
        previous_columns=inputs.previous["columns"] if inputs.previous else None, columns=spec.columns,
        rules=spec.rules, problems=problems,
    )
    return Derived(inputs, frame, validation)


def write_for(spec: TableSpec, partition: str, derived: Derived, run_id: str) -> Write:
    validation = derived.validation
    return Write(
        table=spec.table, partition=partition, partition_expr=spec.daily_on,
        rows=validation.valid[list(spec.columns)], columns=spec.columns, code_version=spec.code_version,
        run_id=run_id, input_versions=derived.inputs.versions, quarantined=validation.quarantined,
        failures=validation.failures, check_results=_stored_results(validation.results),
    )


def materialize(spec: TableSpec, context: dg.AssetExecutionContext):
    partition = context.partition_key if spec.partitioned else UNPARTITIONED
    emitter = lineage_step.for_step(spec, context, partition)
    emitter.started()
    derived = None
    try:
        allow = get_settings().allow_failed_upstream or (
            context.run.tags.get(ALLOW_FAILED_UPSTREAM_TAG, "").lower() == "true"
        )
        warehouse = Warehouse()
        derived = derive(spec, warehouse, partition, allow_failed_upstream=allow, log=context.log,
                         on_inputs=lambda inputs: emitter.inputs_known(inputs.versions, inputs.source_path))
        write = write_for(spec, partition, derived, context.run_id)
        check_results = _check_results(spec, derived.validation.results)
        if derived.validation.blocking:
            warehouse.record_check_results(write)
            yield from check_results
            raise ContractViolation(spec.table, partition, derived.validation.blocking)
        receipt = warehouse.commit(write)
    except dg.DagsterExecutionInterruptedError:  # the run was canceled
        emitter.aborted()
        raise
    except Exception as error:
        emitter.failed(error, traceback.format_exc(), derived.validation if derived else None)
        if isinstance(error, ContractViolation | SourceError):
            # bad data: a retry would fail the same way
            raise dg.Failure(description=str(error), allow_retries=False) from error
        raise
    emitter.completed(derived.validation, receipt, derived.frame)
    context.log.info(
        f"{spec.table} [{partition or 'unpartitioned'}]: {receipt.row_count} rows written, "
        f"{receipt.quarantined_count} quarantined, hash {receipt.content_hash}"
    )
    yield dg.MaterializeResult(
        data_version=dg.DataVersion(receipt.content_hash),
        metadata=_metadata(spec, derived.validation, receipt, derived.inputs, partition),
        check_results=check_results,
    )


def _read_inputs(spec, warehouse, con, partition, allow, log) -> _Inputs:
    frames, versions, reference_values = {}, {}, {}
    expected_rows = None
    for name in spec.inputs:
        upstream = TABLES[name]
        upstream_partition = partition if upstream.partitioned else UNPARTITIONED
        if not warehouse.table_exists(con, name):
            raise dg.Failure(
                f"{spec.table} needs {name}, which has never been materialized: materialize it first",
                allow_retries=False,
            )
        failed = warehouse.blocking_failures(con, name, upstream_partition)
        if failed and not allow:
            checks = ", ".join(f"{check} ({rows} rows)" for check, rows, *_ in failed)
            raise dg.Failure(
                f"{spec.table} refuses to build from {name} [{upstream_partition or 'unpartitioned'}]: "
                f"its latest validation (run {failed[0][2]}) failed blocking check(s) {checks}. Fix and "
                f"re-materialize {name}, or override with PROVLINE_ALLOW_FAILED_UPSTREAM=true or the run "
                f"tag {ALLOW_FAILED_UPSTREAM_TAG}=true.",
                allow_retries=False,
            )
        if failed and log is not None:
            log.warning(f"building from {name} despite its failed blocking checks (override set)")
        latest = warehouse.latest_version(con, name, upstream_partition)
        versions[name] = latest["content_hash"] if latest else ""
        if spec.transform is not None:
            frames[name.replace(".", "_")] = warehouse.read(con, name, upstream_partition, upstream.daily_on)
    contract_meta = contract_metadata(spec.contract)
    for ref in contract_meta.get("references", []):
        if not warehouse.table_exists(con, ref.table):
            raise dg.Failure(f"{spec.table}'s contract checks {ref.column} against {ref.table}, which has never "
                             f"been materialized: materialize group 'reference' first", allow_retries=False)
        rows = con.execute(f"SELECT DISTINCT {quote(ref.table_column)} FROM {quote(ref.table)}").fetchall()
        reference_values[ref.rule] = {row[0] for row in rows}
    if counted := contract_meta.get("row_count_matches"):
        upstream = TABLES[counted]
        where, params = warehouse.partition_filter(partition if upstream.partitioned else UNPARTITIONED,
                                                   upstream.daily_on)
        expected_rows = con.execute(f"SELECT count(*) FROM {quote(counted)} WHERE {where}", params).fetchone()[0]
    previous = warehouse.latest_version(con, spec.table, partition)
    return _Inputs(frames, versions, reference_values, expected_rows, previous)


def _sql_params(sql: str, partition: str) -> dict:
    return {"partition_date": partition} if "$partition_date" in sql else {}


def _call(transform: Callable[..., pd.DataFrame], frames: dict[str, pd.DataFrame], partition: str) -> pd.DataFrame:
    kwargs = {}
    for name in inspect.signature(transform).parameters:
        if name == "partition_date":
            kwargs[name] = date.fromisoformat(partition)
        elif name in frames:
            kwargs[name] = frames[name]
        else:
            raise TypeError(f"{transform.__name__}() asks for {name!r}, not one of its inputs {sorted(frames)}")
    return transform(**kwargs)


def _stored_results(results: list[RuleResult]) -> list[dict]:
    return [
        {"check_name": r.rule.name, "severity": r.rule.severity, "passed": r.passed,
         "blocking": r.blocking, "failing_rows": r.failing_rows}
        for r in results
    ]


def _by_check(items: list) -> dict[str, list]:
    """Rules (or their results) grouped by the Dagster check that reports them, in rule order."""
    groups: dict[str, list] = {}
    for item in items:
        groups.setdefault((item.rule if isinstance(item, RuleResult) else item).check, []).append(item)
    return groups


def _check_results(spec: TableSpec, results: list[RuleResult]) -> list[dg.AssetCheckResult]:
    return [_check_result(spec, check, group) for check, group in _by_check(results).items()]


def _check_result(spec: TableSpec, check: str, results: list[RuleResult]) -> dg.AssetCheckResult:
    failed = [r for r in results if not r.passed]
    blocking = any(r.blocking for r in results)
    metadata = {
        "rule": "; ".join(r.rule.description for r in results),
        "severity": results[0].rule.severity,
        "failing_rows": sum(r.failing_rows for r in results),
        "failure_rate": round(max((r.failure_rate for r in results), default=0.0), 6),
    }
    if len(results) > 1:  # a group: which of its rules failed, and how often
        metadata["failed_rules"] = dg.MetadataValue.json({r.rule.name: r.failing_rows for r in failed})
    if any(r.rule.quarantine for r in results):
        metadata["quarantined_rows"] = sum(r.failing_rows for r in results if r.rule.quarantine)
    if problems := [f"{r.rule.name}: {r.message}" if len(results) > 1 else r.message for r in failed if r.message]:
        metadata["problem"] = "; ".join(problems)
    if sample := [case for r in failed for case in r.sample][:10]:
        metadata["sample"] = dg.MetadataValue.json(sample)
    return dg.AssetCheckResult(
        asset_key=spec.key, check_name=check, passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN, metadata=metadata,
    )


def _metadata(spec: TableSpec, validation: Validation, receipt, inputs: _Inputs, partition: str) -> dict:
    partition_flag = f" --partition {partition}" if partition else ""
    preview = validation.valid.head(PREVIEW_ROWS).astype("string").fillna("")
    header = "| " + " | ".join(preview.columns) + " |\n|" + "---|" * len(preview.columns) + "\n"
    body = "".join("| " + " | ".join(row) + " |\n" for row in preview.itertuples(index=False))
    return {
        "dagster/row_count": receipt.row_count,
        "dagster/column_schema": column_schema(spec),
        "content_hash": receipt.content_hash,
        "code_version": spec.code_version,
        "input_rows": receipt.row_count + receipt.quarantined_count,
        "quarantined_rows": receipt.quarantined_count,
        "warn_failures": sum(1 for r in validation.results if not r.passed and not r.blocking),
        "input_versions": dg.MetadataValue.json(inputs.versions),
        "size_bytes": receipt.size_bytes,
        "preview": dg.MetadataValue.md(header + body),
        "audit": f"provline verify {spec.table}{partition_flag}; "
                 f"provline audit report {spec.table}{partition_flag} --out report.html",
    }
