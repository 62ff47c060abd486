"""The factory's lineage for one step: one OpenLineage run per partition the step builds (a range step
emits what day-by-day steps would), built from the factory's own objects into the plain model
(model.py) and handed to the emitter. Like the emitter, nothing here raises into the pipeline."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import cached_property

import dagster as dg
import pandas as pd

from pipelines.lineage.emitter import LineageEmitter
from pipelines.lineage.model import (
    TRANSFORMED,
    Assertion,
    AssetRun,
    Column,
    ColumnMetrics,
    ColumnSource,
    DatasetRef,
    IndirectSource,
    OutputInfo,
    SourceFile,
)
from pipelines.lineage.runs import run_job_name
from pipelines.lineage.sql_lineage import sql_lineage
from pipelines.rows import Rows
from pipelines.settings import Settings
from pipelines.sql import PARTITION, quote, typed_select

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartitionStats:
    rows: int = 0
    columns: dict[str, ColumnMetrics] = field(default_factory=dict)


def partition_stats(valid: Rows, columns: dict[str, str], unique: Collection[str] = ()) -> dict[str, PartitionStats]:
    """Per partition of the valid rows: the row count and each column's null and distinct counts (NaN is a
    null, as pandas counts it), over the values as written (cast to the contract's types). SQL over the rows where
    they are: one grouped pass for the counts, and a DISTINCT per column, which spills past the memory limit
    where count(DISTINCT) cannot; a column proven `unique` (by validation) has as many distinct values as
    non-null ones."""
    present = {c: t for c, t in columns.items() if c in valid.column_names}
    part = quote(PARTITION)
    nulls = {c: f"{quote(c)} IS NULL" + (f" OR isnan({quote(c)})" if t in ("DOUBLE", "FLOAT") else "")
             for c, t in present.items()}
    typed = f"(SELECT {part}, {typed_select(present)} FROM {{rows}})"
    counts = "".join(f", count(*) FILTER (WHERE {null})" for null in nulls.values())
    distinct = " UNION ALL ".join(
        f"SELECT {part}, {i} AS i, count(*) FROM (SELECT DISTINCT {part}, {quote(c)} FROM {typed} "
        f"WHERE NOT ({nulls[c]})) GROUP BY ALL" for i, c in enumerate(present) if c not in unique)
    found = valid.query(f"SELECT {part}, count(*){counts} FROM {typed} GROUP BY ALL")
    distincts = {(partition, i): n for partition, i, n in valid.query(distinct)} if distinct and found else {}
    return {
        partition: PartitionStats(rows, {
            column: ColumnMetrics(nulls, rows - nulls if column in unique else distincts.get((partition, i), 0))
            for (i, column), nulls in zip(enumerate(present), null_counts, strict=True)})
        for partition, rows, *null_counts in found
    }


class StepLineage:
    def __init__(self, spec, context: dg.AssetExecutionContext, partitions: list[str], dataset_namespace: str,
                 settings: Settings):
        self.spec = spec
        self.dagster_run_id = context.run_id
        self.dagster_job_name = run_job_name(context.run, context.job_def)
        self.runs = {
            partition: AssetRun(
                dagster_run_id=context.run_id,
                dagster_job_name=self.dagster_job_name,
                asset_key=spec.table,
                partition=partition or None,
                attempt=context.retry_number + 1,
                nominal_start=pd.Timestamp(partition, tz="UTC").to_pydatetime() if partition else None,
                nominal_end=(pd.Timestamp(partition, tz="UTC") + timedelta(days=1)).to_pydatetime()
                if partition else None,
                code_version=spec.code_version,
                sql=spec.sql,
                source_path=spec.source_file,
                description=spec.description,
                owners=spec.owners,
                tags={"group": spec.group} if spec.group else {},
            )
            for partition in partitions
        }
        self.inputs: dict[str, list[DatasetRef | SourceFile]] = {
            partition: [DatasetRef(i.table, partition=partition if i.partitioned else None) for i in spec.inputs]
            for partition in partitions
        }
        self.open: set[str] = set()  # the partitions whose OpenLineage run started and has no terminal event yet
        self.emitter = LineageEmitter(settings, dataset_namespace=dataset_namespace)

    def started(self) -> None:
        self.emitter.run_started(self.dagster_run_id, self.dagster_job_name)
        for partition, run in self.runs.items():
            self.emitter.asset_started(run, self.inputs[partition])
            self.open.add(partition)

    def inputs_known(self, versions: dict[str, dict[str, str]], source) -> None:
        """The versions read, per partition; `source` (a SourceTable) is the file a raw table reads."""
        for partition, refs in self.inputs.items():
            read = versions.get(partition, {})
            self.inputs[partition] = [
                DatasetRef(ref.name, read.get(ref.name) or None, ref.partition) for ref in refs
                if isinstance(ref, DatasetRef)
            ] + ([SourceFile(str(source.path), source.content_hash)] if source is not None else [])

    def finished(self, derived, receipts: dict, monitors) -> None:
        """COMPLETE for each partition written; FAIL for each refused (with its failed checks) or blocked."""
        lineage = self.column_lineage
        validation = derived.validation
        stats = partition_stats(validation.valid, self.spec.columns, validation.unique_columns)
        for partition in derived.written:
            receipt = receipts[partition]
            output = self._output(validation, partition, receipt.content_hash, stats.get(partition), lineage,
                                  monitors.findings.get(partition, []))
            self._terminal(partition, self.emitter.asset_completed, self.runs[partition], self.inputs[partition],
                           output)
        for partition in derived.refused:
            failed = [r for r in validation.results[partition] if r.blocking]
            message = "; ".join(f"{r.rule.name}: {r.finding()}" for r in failed)
            output = self._output(validation, partition, None, stats.get(partition), lineage)
            self._terminal(partition, self.emitter.asset_failed, self.runs[partition], self.inputs[partition],
                           f"blocking check(s) failed: {message}", output)
        for partition, why in derived.inputs.blocked.items():
            self._terminal(partition, self.emitter.asset_failed, self.runs[partition], self.inputs[partition], why)

    def failed(self, error: str, stack: str, validation=None) -> None:
        """FAIL for every partition still open (the step raised)."""
        outputs = {}
        if validation is not None:
            try:
                stats = partition_stats(validation.valid, self.spec.columns, validation.unique_columns)
                outputs = {p: self._output(validation, p, None, stats.get(p), ({}, []))
                           for p in self.open if p in validation.results}
            except Exception:  # noqa: BLE001 - the FAIL events go out without the output's details
                outputs = {}
        for partition in sorted(self.open):
            self._terminal(partition, self.emitter.asset_failed, self.runs[partition], self.inputs[partition],
                           error, outputs.get(partition), stack_trace=stack)

    def aborted(self) -> None:
        for partition in sorted(self.open):
            self._terminal(partition, self.emitter.asset_aborted, self.runs[partition], self.inputs[partition])

    def _terminal(self, partition: str, emit, *args, **kwargs) -> None:
        self.open.discard(partition)
        emit(*args, **kwargs)

    def _output(self, validation, partition: str, version: str | None, stats: PartitionStats | None,
                lineage: tuple[dict, list], findings: Sequence = ()) -> OutputInfo:
        """The output dataset of one partition; `stats` are its valid rows' (see partition_stats). `findings` (the
        anomaly monitors') add their verdicts to the assertions and the means they watch to the metrics (as the
        facet's sum and count)."""
        stats = stats or PartitionStats()
        assertions = [
            Assertion(
                name=r.rule.name, success=r.passed, severity=r.rule.severity, column=r.rule.column,
                expected=r.rule.description,
                actual=r.message or f"{r.failing_rows} of {r.rows_checked} rows fail",
            )
            for r in validation.results[partition]
        ] + [
            Assertion(name=f.metric.check, success=not f.anomalous, severity="warn", column=f.metric.column or None,
                      expected=f.expected_text, actual=f.actual_text)
            for f in findings if f.expected is not None
        ]
        metrics = dict(stats.columns)
        for finding in (f for f in findings if f.metric.is_mean and f.metric.column in metrics):
            column = metrics[finding.metric.column]
            count = stats.rows - column.null_count  # the facet has no mean: its sum and count carry it
            metrics[finding.metric.column] = replace(column, sum=finding.actual * count if count else 0.0,
                                                     count=count)
        column_lineage, indirect = lineage
        return OutputInfo(
            name=self.spec.table, version=version, columns=self.columns,
            row_count=stats.rows, column_lineage=column_lineage, indirect_lineage=indirect, assertions=assertions,
            column_metrics=metrics, contract_version=self.spec.contract_version,
        )

    @cached_property
    def columns(self) -> list[Column]:
        schema = self.spec.contract.to_schema()
        return [Column(name, sql_type, schema.columns[name].description)
                for name, sql_type in self.spec.columns.items()]

    @cached_property
    def column_lineage(self) -> tuple[dict[str, list[ColumnSource]], list[IndirectSource]]:
        """The step's column lineage, computed once: the OpenLineage columnLineage facet of every partition,
        and the factory's Dagster `dagster/column_lineage` metadata. Empty when it cannot be computed."""
        try:
            return self._column_lineage()
        except Exception as error:  # noqa: BLE001 - lineage never fails an asset
            log.warning("column lineage of %s could not be computed: %s", self.spec.table, error)
            return {}, []

    def _column_lineage(self) -> tuple[dict[str, list[ColumnSource]], list[IndirectSource]]:
        """Per output column its inputs with transformation types; and the inputs of the whole output."""
        outputs = list(self.spec.columns)
        inputs = {i.table: list(i.columns) for i in self.spec.inputs}
        if self.spec.sql:
            return sql_lineage(self.spec.sql, inputs, outputs)
        # pandas: what the asset declares, else a column copied from the input that has it; a pandas
        # transform is opaque, so DIRECT/TRANSFORMATION (the declared pairs may carry their own).
        if self.spec.source:
            return {}, []
        lineage: dict[str, list[ColumnSource]] = {}
        for column in outputs:
            if column in self.spec.column_lineage:
                declared = self.spec.column_lineage[column]
            else:
                declared = [(name, column) for name, cols in inputs.items() if column in cols]
            lineage[column] = [ColumnSource(*source) if len(source) > 2 else ColumnSource(*source, TRANSFORMED)
                               for source in declared]
        return {column: sources for column, sources in lineage.items() if sources}, []
