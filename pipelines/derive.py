"""A materialization's pure path, for one partition or a range at once (set-based): read the inputs ->
run the transform -> validate; and the writes that follow from it. Used by the factory and by
`provline verify` (on a scratch warehouse holding the recorded input versions); nothing here writes.

Partitions whose upstream partition's latest blocking check failed are left out (cross-run blocking;
override: PROVLINE_ALLOW_FAILED_UPSTREAM or the run tag provline/allow_failed_upstream=true).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import pandas as pd
import pyarrow
import pyarrow.compute as pc
from pandera.errors import SchemaError, SchemaErrors

from pipelines.quality import (
    BLOCKING,
    SOURCE_COVERAGE_RULE,
    MissingTable,
    RuleResult,
    Validation,
    expected_rows,
    reference_values,
    validate,
)
from pipelines.rows import BATCH_ROWS, Rows
from pipelines.settings import Settings, get_settings
from pipelines.sources import SOURCE_LINE, SourceTable, describe_outside, read_landed, read_source
from pipelines.spec import TableSpec
from pipelines.sql import PARTITION, UNPARTITIONED, arrow_table, columns_named, partition_label, quote
from pipelines.warehouse import Warehouse, Write

ALLOW_FAILED_UPSTREAM_TAG = "provline/allow_failed_upstream"
UPSTREAM_FAILED = "upstream_failed"
"""Recorded (in quality.check_results, blocking) for a partition left out because an upstream partition
failed: its own downstream then leaves it out too, in this run and later ones, naming the first cause."""
PREVIEW_ROWS = 5


@dataclass
class Inputs:
    """What a materialization read, per partition where it differs."""

    versions: dict[str, dict[str, str]]  # partition -> {input table or "source:<file>": content hash}
    blocked: dict[str, str]  # partition -> why it cannot be built (an upstream partition failed)
    causes: dict[str, str]  # partition -> the first cause of that (an upstream's failed check, in words)
    previous: dict[str, dict]  # partition -> this table's previous version-log row
    reference_values: dict[str, set] = field(default_factory=dict)
    expected_rows: dict[str, int] | None = None
    frames: dict[str, pyarrow.Table] = field(default_factory=dict)
    """A pandas transform's inputs by parameter name, as read (Arrow, until the transform takes them as frames)."""
    source: SourceTable | None = None


@dataclass
class Derived:
    """What one materialization computes from its inputs, before anything is written."""

    spec: TableSpec
    partitions: list[str]  # the partitions asked for
    inputs: Inputs
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
        """Per partition, its first valid rows as a markdown table: DuckDB picks them (one grouped pass over a
        range), and only they are rendered, typed as the contract types them."""
        columns = [c for c in self.validation.valid.column_names if c in self.spec.columns]  # in the rows' order
        head = self.validation.valid.query(  # (rowid named first: DuckDB 1.5 fails on it inside a window)
            f"SELECT * EXCLUDE (position) FROM (SELECT rowid AS position, "
            f"{', '.join(quote(c) for c in [PARTITION, *columns])} FROM {{rows}}) "
            f"QUALIFY row_number() OVER (PARTITION BY {quote(PARTITION)} ORDER BY position) <= {PREVIEW_ROWS} "
            "ORDER BY position", fetch=lambda result: result.df())
        text = _as_contract_types(self.spec, head[columns]).astype("string").fillna("")
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
    log=None, on_inputs: Callable[[Inputs], None] | None = None, settings: Settings | None = None,
) -> Derived:
    """Read the inputs, run the pure transform, validate: for one partition or a range. Used by
    materialize (with the run's settings) and by `provline verify` (on a scratch warehouse holding the recorded
    input versions)."""
    settings = settings or get_settings()
    rows = None
    with warehouse.connect() as con:
        inputs = _read_inputs(spec, warehouse, con, partitions, allow_failed_upstream, log)
        built = [p for p in partitions if p not in inputs.blocked]
        if spec.sql and built:  # a SQL asset's rows stream from the warehouse into the scratch database
            rows = _labelled(spec, con.execute(spec.sql, _sql_params(spec, built)).to_arrow_reader(BATCH_ROWS))
    problems: dict[str, dict[str, str]] = {}
    outside, source = None, None
    if spec.source and built:
        landed = read_landed(spec.source, spec.contract, spec.daily_on, built, settings.landing_folder) \
            if spec.partitioned else None
        source = landed or read_source(spec.source, spec.contract, settings)
        if spec.partitioned:
            strays = source.outside(spec.daily_on, spec.partitions)
            if len(strays):  # kept out at the source, blocking nothing
                message = describe_outside(source, strays[SOURCE_LINE].to_numpy(), spec.partitions)
                problems = {p: {SOURCE_COVERAGE_RULE: message} for p in built}
                outside = _outside_cases(spec, source, strays)
                if log is not None:
                    log.warning(message)
        inputs.frames[spec.source.name] = source.rows(spec.daily_on, built)
        inputs.source = source
        for p in built:
            inputs.versions.setdefault(p, {})[f"source:{source.path.name}"] = source.content_hash
        if source.extra_columns and log is not None:
            log.warning(f"{source.path}: extra column(s) not in the contract, dropped: {source.extra_columns}")
    if on_inputs is not None:
        on_inputs(inputs)
    if rows is None:
        rows = _labelled(spec, _call(spec, inputs.frames) if built else
                         pyarrow.table({c: pyarrow.array([], pyarrow.null()) for c in spec.columns}))
    _keep_partitions(spec, rows, partitions, built)
    # a raw transform passes its rows' source lines through: they name failing rows, and are never written
    lines = SOURCE_LINE if SOURCE_LINE in rows.column_names else None
    validation = validate(
        rows, spec.contract, key_columns=spec.key_columns, partitions=built, reference_values=inputs.reference_values,
        expected_rows=inputs.expected_rows, previous=inputs.previous, columns=spec.columns, rules=spec.rules,
        problems=problems, lines=lines, locate=source.locations if lines else None, outside=outside,
    )
    return Derived(spec, partitions, inputs, validation)


def planned_rows(spec: TableSpec, warehouse: Warehouse, partitions: list[str], settings: Settings) -> dict[str, int]:
    """About how many rows each partition will hold, to cut a range into chunks before reading it: a source's rows
    per day, or the rows of the partitioned inputs' latest versions. (Nothing for days from the landing zone: those
    files are read one by one.)"""
    if spec.source is not None:
        return {} if settings.landing_dir else read_source(spec.source, spec.contract, settings).counts(spec.daily_on)
    rows: dict[str, int] = dict.fromkeys(partitions, 0)
    with warehouse.connect() as con:
        for upstream in (i for i in spec.inputs if i.partitioned):
            if warehouse.table_exists(con, upstream.table):
                for partition, version in warehouse.latest_versions(con, upstream.table, partitions).items():
                    rows[partition] += version["row_count"]
    return rows


def write_for(spec: TableSpec, derived: Derived, run_id: str, partitions: list[str]) -> Write:
    """The write of some of the derived partitions (the valid ones; or the refused ones, for their checks)."""
    validation = derived.validation
    return Write(
        table=spec.table, partition_expr=spec.daily_on, columns=spec.columns, code_version=spec.code_version,
        run_id=run_id, partitions=partitions,
        rows=validation.valid,
        quarantined=_of_partitions(validation.quarantined, partitions),
        failures=validation.failures[validation.failures[PARTITION].isin(partitions)],
        input_versions={p: derived.inputs.versions.get(p, {}) for p in partitions},
        check_results={p: _stored_results(validation.results[p], spec.table, p) for p in partitions},
        contract_version=spec.contract_version,
    )


def _of_partitions(rows: pyarrow.Table, partitions: list[str]) -> pyarrow.Table:
    """The rows of some partitions (all of them, as they are, when that is every row)."""
    keep = pc.fill_null(pc.is_in(rows.column(PARTITION), value_set=pyarrow.array(partitions, pyarrow.string())),
                        False)
    return rows if pc.all(keep).as_py() else rows.filter(keep)


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


PANDAS_TYPES = {
    pyarrow.string(): pd.StringDtype("pyarrow"), pyarrow.large_string(): pd.StringDtype("pyarrow"),
    pyarrow.int8(): pd.Int8Dtype(), pyarrow.int16(): pd.Int16Dtype(), pyarrow.int32(): pd.Int32Dtype(),
    pyarrow.int64(): pd.Int64Dtype(), pyarrow.float32(): pd.Float32Dtype(), pyarrow.float64(): pd.Float64Dtype(),
    pyarrow.bool_(): pd.BooleanDtype(),
}
"""The dtypes a pandas transform gets its inputs in, the contracts' own: text stays in its Arrow buffers (no copy);
numbers and flags are pandas' nullable dtypes, because pandas' Arrow-backed numbers lack operators (`%`: pyarrow has
no modulo kernel). Timestamps are pandas' datetime64."""


def _call(spec: TableSpec, frames: dict[str, pyarrow.Table]) -> pyarrow.Table:
    """Run a pandas transform: its inputs as frames of the contracts' dtypes (see PANDAS_TYPES), its output back
    as Arrow (Arrow-backed columns without a copy). The inputs are handed over: each Arrow table is let go once
    it is a frame, so a big chunk is not held three times."""
    kwargs = {}
    for name in inspect.signature(spec.transform).parameters:
        if name not in frames:
            raise TypeError(f"{spec.transform.__name__}() asks for {name!r}, not one of its inputs {sorted(frames)}")
        kwargs[name] = frames.pop(name).to_pandas(types_mapper=PANDAS_TYPES.get)
    return arrow_table(spec(**kwargs))


def _outside_cases(spec: TableSpec, source: SourceTable, strays: pd.DataFrame) -> pd.DataFrame:
    """The failure cases of source rows that belong to no partition: the columns that date a row and their
    values, the row's key, its file and line."""
    dated = columns_named(spec.daily_on, spec.columns)
    rows = strays[list(dict.fromkeys([*dated, *spec.key_columns]))].astype("string").fillna("None")
    return pd.DataFrame({
        "rule": SOURCE_COVERAGE_RULE,
        "column": ", ".join(dated),
        "failure_case": [", ".join(f"{c}={v}" for c, v in zip(dated, row, strict=True))
                         for row in rows[dated].itertuples(index=False)],
        "row_key": ["|".join(row) or None for row in rows[list(spec.key_columns)].itertuples(index=False)],
        "source": source.locations(strays[SOURCE_LINE].to_numpy()),
    })


def _labelled(spec: TableSpec, rows: pyarrow.Table | pyarrow.RecordBatchReader) -> Rows:
    """The transform's rows into the scratch database, each labelled with its partition by DuckDB (from the
    columns that date it; NULL where its date is invalid)."""
    label = partition_label(spec.daily_on, tolerant=True) if spec.partitioned else f"'{UNPARTITIONED}'"
    return Rows.load(rows, f"SELECT *, {label} AS {quote(PARTITION)} FROM {{source}}")


def _keep_partitions(spec: TableSpec, rows: Rows, partitions: list[str], built: list[str]) -> None:
    """Leave out the rows of blocked partitions. A row outside the partitions asked for is a bug in the
    transform, not bad data: it fails the step."""
    if not spec.partitioned:
        return
    outside = f"{quote(PARTITION)} IS NULL OR NOT list_contains($partitions, {quote(PARTITION)})"
    (stray, example), = rows.query(f"SELECT count(*), min(coalesce({quote(PARTITION)}, 'no valid date')) "
                                   f"FROM {{rows}} WHERE {outside}", {"partitions": partitions})
    if stray:
        raise ValueError(f"{spec.table}: the transform returned {stray} row(s) outside the partitions being built "
                         f"(e.g. partition {example!r}); it must only return rows of its inputs' partitions")
    if built != partitions:
        rows.delete(f"NOT list_contains($built, {quote(PARTITION)})", {"built": built})


def _as_contract_types(spec: TableSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """A few rows typed as the contract types them (pandera's coercion), to show them; as they are if not."""
    try:
        return spec.contract.to_schema().coerce_dtype(frame)
    except (SchemaError, SchemaErrors):
        return frame


def _stored_results(results: list[RuleResult], table: str, partition: str) -> list[dict]:
    return [
        {"check_name": r.rule.name, "severity": r.rule.behaviour, "passed": r.passed, "blocking": r.blocking,
         "failing_rows": r.failing_rows, "message": None if r.passed else _finding(r, table, partition)}
        for r in results
    ]


def _finding(result: RuleResult, table: str, partition: str) -> str:
    """A failed rule in words: where, and the table-level finding or a failing value."""
    return f"{table} [{partition or 'unpartitioned'}] failed {result.rule.name}: {result.finding()}"


def blocked_write(spec: TableSpec, derived: Derived, run_id: str) -> Write:
    """The record of partitions left out because an upstream partition failed (see UPSTREAM_FAILED)."""
    blocked = list(derived.inputs.blocked)
    return Write(
        table=spec.table, partition_expr=spec.daily_on, columns=spec.columns, code_version=spec.code_version,
        run_id=run_id, partitions=blocked, rows=None,
        check_results={p: [{"check_name": UPSTREAM_FAILED, "severity": BLOCKING, "passed": False, "blocking": True,
                            "failing_rows": 0, "message": derived.inputs.causes[p]}]
                       for p in blocked},
    )
