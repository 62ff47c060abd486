"""The factory's lineage for one step: builds the plain model (model.py) from the factory's own
objects and hands it to the emitter. Like the emitter, nothing here raises into the pipeline."""

from __future__ import annotations

import logging

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
from pipelines.lineage.sql_lineage import sql_lineage

log = logging.getLogger(__name__)


class StepLineage:
    def __init__(self, spec, context: dg.AssetExecutionContext, partition: str):
        from pipelines.factory import TABLES  # the registry of every table (import cycle otherwise)

        self.spec = spec
        self.tables = TABLES
        self.dagster_run_id = context.run_id
        self.dagster_job_name = context.job_name
        window = context.partition_time_window if spec.partitioned else None
        self.run = AssetRun(
            dagster_run_id=context.run_id,
            dagster_job_name=context.job_name,
            asset_key=spec.table,
            partition=partition or None,
            attempt=context.retry_number + 1,
            nominal_start=window.start if window else None,
            nominal_end=window.end if window else None,
            code_version=spec.code_version,
            sql=spec.sql,
            source_path=spec.source_file,
            description=spec.description,
            owners=spec.owners,
            tags={"group": spec.group or ("flights" if spec.partitioned else "reference")},
        )
        self.inputs: list[DatasetRef | SourceFile] = [
            DatasetRef(name, partition=partition if self.tables[name].partitioned else None) for name in spec.inputs
        ]
        self.emitter = LineageEmitter()

    def started(self) -> None:
        self.emitter.run_started(self.dagster_run_id, self.dagster_job_name)
        self.emitter.asset_started(self.run, self.inputs)

    def inputs_known(self, versions: dict[str, str], source_path: str | None) -> None:
        refs: list[DatasetRef | SourceFile] = [
            DatasetRef(ref.name, versions.get(ref.name) or None, ref.partition)
            for ref in self.inputs if isinstance(ref, DatasetRef)
        ]
        if source_path:
            refs.append(SourceFile(source_path))
        self.inputs = refs

    def completed(self, validation, receipt, frame: pd.DataFrame) -> None:
        try:
            output = self._output(validation, receipt.content_hash, receipt.row_count, receipt.size_bytes)
        except Exception as error:  # noqa: BLE001 - lineage never fails an asset
            log.warning("lineage facets for %s could not be built: %s", self.spec.table, error)
            output = None
        if output is not None:
            self.emitter.asset_completed(self.run, self.inputs, output)

    def failed(self, error: BaseException, stack: str, validation=None) -> None:
        output = None
        if validation is not None:
            try:
                output = self._output(validation, None, len(validation.valid), None)
            except Exception:  # noqa: BLE001
                output = None
        self.emitter.asset_failed(self.run, self.inputs, str(error), output, stack_trace=stack)

    def aborted(self) -> None:
        self.emitter.asset_aborted(self.run, self.inputs)

    def _output(self, validation, version: str | None, row_count: int, size: int | None) -> OutputInfo:
        schema = self.spec.contract.to_schema()
        columns = [Column(name, sql_type, schema.columns[name].description)
                   for name, sql_type in self.spec.columns.items()]
        valid = validation.valid
        metrics = {
            name: ColumnMetrics(int(valid[name].isna().sum()), int(valid[name].nunique(dropna=True)))
            for name in self.spec.columns if name in valid
        }
        assertions = [
            Assertion(
                name=r.rule.name, success=r.passed, severity=r.rule.severity, column=r.rule.column,
                expected=r.rule.description,
                actual=r.message or f"{r.failing_rows} of {r.rows_checked} rows fail",
            )
            for r in validation.results
        ]
        column_lineage, indirect = self._column_lineage()
        return OutputInfo(
            name=self.spec.table, version=version, columns=columns, row_count=row_count, size_bytes=size,
            column_lineage=column_lineage, indirect_lineage=indirect, assertions=assertions,
            column_metrics=metrics,
        )

    def _column_lineage(self) -> tuple[dict[str, list[ColumnSource]], list[IndirectSource]]:
        """Per output column its inputs with transformation types; and the inputs of the whole output."""
        outputs = list(self.spec.columns)
        inputs = {name: list(self.tables[name].columns) for name in self.spec.inputs}
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


def for_step(spec, context: dg.AssetExecutionContext, partition: str) -> StepLineage:
    return StepLineage(spec, context, partition)

