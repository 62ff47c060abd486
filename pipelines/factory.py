"""The asset factory: the only wrapper that turns a table's spec into a production asset.

    read -> transform -> validate -> commit -> version -> lineage

`build_asset` makes the Dagster asset of a `TableSpec` (pipelines/spec.py). Its compute, for one partition
or a range of partitions at once (set-based), a chunk of days at a time:
1. emits lineage START, one OpenLineage run per partition;
2. derives the partitions (pipelines/derive.py): reads the inputs for the whole range (SQL with a range
   predicate, pandas on the range frame), runs the pure transform once, validates in one scan with results
   per partition, leaving out the partitions whose upstream failed;
3. commits the valid partitions — rows, quarantined rows, failure cases, check results, one version-log
   row each — in one transaction; a partition that failed a blocking check keeps its previous version
   and only its check results and failure cases are recorded;
4. reports to Dagster per partition: a materialization with DataVersion = content hash and its
   metadata, and its asset check results (the contract's, then the anomaly monitors');
5. emits lineage COMPLETE or FAIL per partition.
"""

from __future__ import annotations

import inspect
import math
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from pipelines import monitor
from pipelines.dagster_internals import (
    CODE_VERSION_TAG,
    DATA_VERSION_IS_USER_PROVIDED_TAG,
    DATA_VERSION_TAG,
    DEFAULT_DATA_VERSION,
    EVENTS_REPORTED,
    NULL_EVENT_POINTER,
    AssetCheckEvaluationTargetMaterializationData,
    extract_data_version_from_entry,
    get_input_data_version_tag,
    get_input_event_pointer_tag,
    quiet_ungated_check_notice,
)
from pipelines.derive import ALLOW_FAILED_UPSTREAM_TAG, Derived, blocked_write, derive, planned_rows, write_for
from pipelines.lineage.model import ColumnSource
from pipelines.lineage.runs import record_cancel
from pipelines.lineage.step import StepLineage
from pipelines.quality import (
    BLOCKING,
    QUARANTINE,
    ContractViolation,
    MissingTable,
    RuleResult,
    describe_failures,
    group_by_check,
)
from pipelines.settings import Settings
from pipelines.sources import SourceError
from pipelines.spec import TableSpec
from pipelines.sql import UNPARTITIONED, configure_scratch, interrupted
from pipelines.warehouse import TRANSIENT_ERRORS, Receipt, Warehouse, quarantine_table

__all__ = ["CHECKS_PER_RUN_TAG", "RESOURCE_KEYS", "build_asset", "materialize", "resources"]

RESOURCE_KEYS = ("warehouse", "settings")
"""The resources an asset of the factory requires: where it writes, and every other setting its step uses."""


def resources(warehouse: Warehouse | None = None, settings: Settings | None = None) -> dict:
    """The factory's resources, for Definitions (and dg.materialize): not given, each comes from the environment,
    every variable set named as Dagster's EnvVar."""
    return {"warehouse": warehouse or Warehouse.from_environment(), "settings": settings or Settings.from_environment()}

CHECKS_PER_RUN_TAG = "provline/checks_per_run"
"""Run tag (or PROVLINE_CHECKS_PER_RUN=true): a range reports each Dagster check once for the run, not once per
partition; for backfills where Dagster's own cost of recording per-partition checks dominates."""
TRANSIENT_RETRIES = 1
"""A transient error (warehouse.TRANSIENT_ERRORS: a lock or commit conflict that outlasted its wait, I/O) is
retried once, by the factory raising RetryRequested; every other error fails the step at once. An asset
RetryPolicy would retry any error, and Dagster also applies it to an interrupted step, re-running what the
operator just stopped."""


def build_asset(spec: TableSpec) -> dg.AssetsDefinition:
    quiet_ungated_check_notice()  # a range step's checks are reported per partition, not as check outputs
    with warnings.catch_warnings():  # partitioned checks (preview) and backfill policies (beta) are used knowingly
        warnings.simplefilter("ignore", (dg.BetaWarning, dg.PreviewWarning))
        return _build_asset(spec)


def _build_asset(spec: TableSpec) -> dg.AssetsDefinition:
    blocking = _blocking_checks(spec)
    check_specs = [
        dg.AssetCheckSpec(
            check, asset=spec.key, partitions_def=spec.partitions, blocking=check in blocking,
            description="; ".join(_described(rule) for rule in rules),
        )
        for check, rules in group_by_check(spec.rules).items()
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
        required_resource_keys=set(RESOURCE_KEYS),
    )
    def _asset(context):  # (no annotation: Dagster inspects it, and annotations here are strings)
        return (yield from materialize(spec, context, context.resources.warehouse, context.resources.settings))

    return _asset


def _described(rule) -> str:
    """A rule in the check's description: what it does, what it checks, what it tolerates."""
    text = f"[{rule.behaviour}] {rule.description}"
    if rule.max_failure_rate:
        text += f" (passes while at most {rule.max_failure_rate:.1%} of the rows fail)"
    if rule.acknowledgement is not None:
        text += f" (acknowledged: {rule.acknowledgement.describe()})"
    return text


def _definition_metadata(spec: TableSpec) -> dict:
    """What the UI shows of the asset before any run."""
    contract = f"checks/{Path(inspect.getsourcefile(spec.contract)).name}::{spec.contract.__name__}"
    return {
        "dagster/column_schema": spec.column_schema,
        "dagster/table_name": spec.table,
        "contract": contract,
        "transform": spec.source_file,
        "audit": f"provline lineage upstream {spec.table}; provline audit report {spec.table} --out report.html",
        # Dagster's open-source UI draws no column lineage: say where to look at it
        "column_lineage": f"provline audit report {spec.table} --out report.html (section Column lineage); as JSON: "
                          "a run's event log, the materialization's dagster/column_lineage",
        "contract_version": spec.contract_version,
        "contract_export": f"provline contract export {spec.table} --out contracts",  # ODCS v3.1.0, pipelines/contracts
    }


# --- one materialization: commit and report ------------------------------------------------


def materialize(spec: TableSpec, context: dg.AssetExecutionContext, warehouse: Warehouse, settings: Settings):
    partitions = list(context.partition_keys) if spec.partitioned else [UNPARTITIONED]
    configure_scratch(settings.memory_limit, settings.spill_dir)  # where the step's rows are held, and spill
    lineage = StepLineage(spec, context, partitions, warehouse.lineage_namespace, settings)
    try:
        return (yield from _materialize(spec, context, warehouse, settings, partitions, lineage))
    except BaseException as error:
        if not interrupted(error):
            raise
        # Ctrl-C, SIGTERM or a cancel (also as DuckDB reports one): the step ends here, and the run with it;
        # nothing retries an interrupt (see TRANSIENT_RETRIES)
        lineage.aborted()
        record_cancel(context.instance, context.run_id)
        if isinstance(error, dg.DagsterExecutionInterruptedError | KeyboardInterrupt):
            raise
        raise dg.DagsterExecutionInterruptedError() from error


def _materialize(spec: TableSpec, context: dg.AssetExecutionContext, warehouse: Warehouse, settings: Settings,
                 partitions: list[str], lineage: StepLineage):
    single = len(partitions) == 1
    lineage.started()
    allow = settings.allow_failed_upstream or (
        context.run.tags.get(ALLOW_FAILED_UPSTREAM_TAG, "").lower() == "true"
    )
    column_lineage = _column_lineage_metadata(lineage.column_lineage[0])
    built: list[tuple[Derived, dict[str, Receipt]]] = []
    per_run: dict[str, list] | None = {} if not single and _checks_per_run(context, settings) else None
    # a long range is built a chunk of days at a time: memory stays bounded, results are the same
    rows = {} if single else planned_rows(spec, warehouse, partitions, settings)
    for chunk in _chunks(partitions, rows, settings.range_chunk_rows):
        derived, receipts, monitors = _build(spec, context, warehouse, settings, chunk, allow, lineage, single)
        lineage.finished(derived, receipts, monitors)
        yield from _report(spec, context, derived, receipts, single, column_lineage, monitors, per_run)
        built.append((derived, receipts))
    if per_run is not None:
        yield from _run_check_evaluations(spec, per_run)
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


def _chunks(partitions: list[str], rows: dict[str, int], budget: int) -> list[list[str]]:
    """Consecutive partitions, cut where the next would take a chunk past `budget` rows (a day is never split)."""
    chunks: list[list[str]] = [[]]
    held = 0
    for partition in partitions:
        if chunks[-1] and held + rows.get(partition, 0) > budget:
            chunks.append([])
            held = 0
        chunks[-1].append(partition)
        held += rows.get(partition, 0)
    return chunks


def _build(
    spec: TableSpec, context: dg.AssetExecutionContext, warehouse: Warehouse, settings: Settings,
    partitions: list[str], allow: bool, lineage: StepLineage, single: bool,
) -> tuple[Derived, dict[str, Receipt], monitor.Monitors]:
    """Derive and commit some partitions: the valid ones written, the refused and blocked ones recorded; then
    the monitors' verdicts on what was written."""
    derived = None
    try:
        derived = derive(spec, warehouse, partitions, allow_failed_upstream=allow, log=context.log,
                         on_inputs=lambda inputs: lineage.inputs_known(inputs.versions, inputs.source),
                         settings=settings)
        with warehouse.session():  # the writes and the monitors that read them: one connection
            if derived.inputs.blocked:
                warehouse.record_failures(blocked_write(spec, derived, context.run_id))
            if single and not derived.built:  # blocked by its upstream: nothing to run
                raise dg.Failure("\n".join(derived.inputs.blocked.values()), allow_retries=False)
            if derived.refused:
                warehouse.record_failures(write_for(spec, derived, context.run_id, derived.refused))
            written = derived.written
            receipts = warehouse.commit(write_for(spec, derived, context.run_id, written)) if written else {}
            return derived, receipts, monitor.evaluate(spec, warehouse, settings, derived.validation.results,
                                                       receipts, context.run_id)
    except Exception as error:
        if interrupted(error):
            raise  # (materialize ends the step's lineage: ABORT)
        lineage.failed(str(error), traceback.format_exc(), derived.validation if derived else None)
        if isinstance(error, dg.Failure):
            raise
        if isinstance(error, TRANSIENT_ERRORS):
            raise dg.RetryRequested(max_retries=TRANSIENT_RETRIES, seconds_to_wait=1) from error
        # bad data or a bug: a retry would fail the same way
        known = isinstance(error, ContractViolation | SourceError | MissingTable)
        raise dg.Failure(description=str(error) if known else f"{type(error).__name__}: {error}",
                         allow_retries=False) from error


def _report(spec: TableSpec, context: dg.AssetExecutionContext, derived: Derived, receipts: dict[str, Receipt],
            single: bool, column_lineage: dg.TableColumnLineage | None, monitors: monitor.Monitors,
            per_run: dict[str, list] | None = None):
    """The Dagster events: per partition, its materialization (when written), then its check results (the
    contract's, then the anomaly monitors'), each pointing at the materialization it checked. A run of one
    partition materializes Dagster's own way; a range reports each partition itself, with the same input
    provenance Dagster records for one (`input_provenance`), so staleness is right per partition. Check
    results are events, not check outputs: half the writes.
    With checks reported per run (`per_run`, see CHECKS_PER_RUN_TAG), the check results are collected there."""
    provenance = {} if single else input_provenance(context.instance, spec, derived.written)
    for partition in derived.written:
        receipt = receipts[partition]
        metadata = _metadata(spec, derived, partition, receipt, column_lineage)
        if single:
            yield dg.MaterializeResult(data_version=dg.DataVersion(receipt.content_hash), metadata=metadata)
        else:
            yield dg.AssetMaterialization(
                asset_key=spec.key, partition=partition, metadata=metadata,
                tags={DATA_VERSION_TAG: receipt.content_hash, CODE_VERSION_TAG: spec.code_version,
                      DATA_VERSION_IS_USER_PROVIDED_TAG: "true", **provenance[partition]},
            )
    targets = _materializations(context, spec, derived.written, derived.refused) if per_run is None else {}
    blocking = _blocking_checks(spec)
    quarantined = derived.validation.quarantined_counts
    for partition in derived.built:
        results = derived.validation.results[partition]
        for result in _check_results(spec, results, partition, quarantined.get(partition, 0)) + \
                monitors.check_results(partition):
            if per_run is not None:
                per_run.setdefault(result.check_name, []).append((partition, result))
                continue
            yield dg.AssetCheckEvaluation(
                asset_key=spec.key, check_name=result.check_name, passed=result.passed,
                metadata=result.metadata, severity=result.severity, partition=partition or None,
                target_materialization_data=targets.get(partition),
                # a range goes on with the other partitions: the factory blocks this one downstream itself
                blocking=single and result.check_name in blocking,
            )


def input_provenance(instance: dg.DagsterInstance, spec: TableSpec, partitions: list[str]) -> dict[str, dict]:
    """Per partition, the data provenance tags Dagster writes on a one-partition materialization: for each input,
    the materialization event it read (the same partition's, or an unpartitioned input's latest) and that event's
    data version. Dagster's staleness compares them with the inputs' later events; without them every input
    would be "a new dependency" and each partition of a range "Unsynced". Two queries per input."""
    tags: dict[str, dict] = {partition: {} for partition in partitions}
    for upstream in spec.inputs:
        if upstream.partitioned:  # the same daily partitions (a spec's inputs are mapped one to one)
            ids = instance.get_latest_storage_id_by_partition(
                upstream.key, dg.DagsterEventType.ASSET_MATERIALIZATION, set(partitions))
            found = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=upstream.key, storage_ids=list(ids.values())), limit=len(ids)
            ).records if ids else []
        else:
            found = instance.fetch_materializations(upstream.key, limit=1).records
        events = {record.partition_key or UNPARTITIONED: record for record in found}
        for partition in partitions:
            record = events.get(partition if upstream.partitioned else UNPARTITIONED)
            version = extract_data_version_from_entry(record.event_log_entry) if record else None
            tags[partition] |= {  # (Dagster's own values for an input never materialized)
                get_input_data_version_tag(upstream.key): (version or DEFAULT_DATA_VERSION).value,
                get_input_event_pointer_tag(upstream.key): str(record.storage_id) if record else NULL_EVENT_POINTER,
            }
    return tags


def _checks_per_run(context: dg.AssetExecutionContext, settings: Settings) -> bool:
    """Whether a range reports each check once for the run instead of once per partition (opt-in)."""
    return settings.checks_per_run or context.run.tags.get(CHECKS_PER_RUN_TAG, "").lower() == "true"


def _run_check_evaluations(spec: TableSpec, per_run: dict[str, list]) -> Iterator[dg.AssetCheckEvaluation]:
    """One evaluation per check for a whole range: it fails when any partition failed, and its metadata names
    each failed partition and why. (Each partition's own result is in quality.check_results and OpenLineage.)"""
    for check, results in per_run.items():
        failed = {partition or "unpartitioned": _why(result) for partition, result in results if not result.passed}
        yield dg.AssetCheckEvaluation(
            asset_key=spec.key, check_name=check, passed=not failed, severity=results[0][1].severity,
            metadata={"partitions": len(results), "failed_partitions": len(failed),
                      "failures": dg.MetadataValue.json(failed),
                      "per_partition": f"provline health; quality.check_results WHERE asset = '{spec.table}'"},
        )


def _why(result: dg.AssetCheckResult) -> str:
    """A failed check result in a line: its problem, or how many rows failed which rules."""
    metadata = result.metadata
    if metadata.get("problem"):
        return str(metadata["problem"])
    rules = metadata.get("failed_rules")
    named = ", ".join(f"{rule} ({rows})" for rule, rows in rules.data.items()) if rules is not None \
        else str(metadata.get("rule", ""))
    return f"{metadata.get('failing_rows', 0)} failing rows: {named}"


def _materializations(
    context: dg.AssetExecutionContext, spec: TableSpec, written: list[str], refused: list[str]
) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """The materialization each partition's checks evaluated: the one just recorded, or for a refused
    partition the previous version it keeps. (What Dagster looks up for a single partition's checks.)"""
    targets = {}
    for partitions in ([written] if written else []) + [[p] for p in refused]:  # the written ones are the newest
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=spec.key, asset_partitions=partitions if spec.partitioned else None),
            limit=len(partitions)).records
        for record in records:
            partition = record.event_log_entry.dagster_event.partition or UNPARTITIONED
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
    return dg.Output(None, output_name=spec.key.to_python_identifier(), metadata={EVENTS_REPORTED: True})


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


def _blocking_checks(spec: TableSpec) -> set[str]:
    """The Dagster checks that block downstream: those reporting a blocking rule."""
    return {check for check, rules in group_by_check(spec.rules).items() if any(r.behaviour == BLOCKING for r in rules)}


def _check_results(spec: TableSpec, results: list[RuleResult], partition: str,
                   quarantined: int) -> list[dg.AssetCheckResult]:
    return [_check_result(spec, check, group, partition, quarantined)
            for check, group in group_by_check(results).items()]


def _check_result(spec: TableSpec, check: str, results: list[RuleResult], partition: str,
                  quarantined: int) -> dg.AssetCheckResult:
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
        metadata["quarantined_rows"] = quarantined  # rows, each counted once however many rules it failed
        metadata.update(_quarantine_metadata(spec, partition))
    if problems := [f"{r.rule.name}: {r.message}" if len(results) > 1 else r.message for r in failed if r.message]:
        metadata["problem"] = "; ".join(problems)
    if sample := [_json_safe(case) for r in failed for case in r.sample][:10]:
        metadata["sample"] = dg.MetadataValue.json(sample)
    if tolerated := {r.rule.name: f"{r.failing_rows} of {r.rows_checked} rows ({r.failure_rate:.2%}), "
                     f"at most {r.rule.max_failure_rate:.1%} allowed"
                     for r in results if r.found and r.within_threshold and not r.acknowledged}:
        metadata["within_threshold"] = dg.MetadataValue.json(tolerated)
    if acknowledged := {r.rule.name: {"note": r.rule.acknowledgement.note, "until": str(r.rule.acknowledgement.expires),
                                      "failing_rows": r.failing_rows} for r in results if r.acknowledged}:
        metadata["acknowledged"] = dg.MetadataValue.json(acknowledged)
    if expired := {r.rule.name: str(r.rule.acknowledgement.expires) for r in failed if r.rule.acknowledgement}:
        metadata["acknowledgement_expired"] = dg.MetadataValue.json(expired)
    return dg.AssetCheckResult(
        asset_key=spec.key, check_name=check, passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR if behaviour == BLOCKING else dg.AssetCheckSeverity.WARN,
        metadata=metadata,
    )


def _json_safe(case: dict) -> dict:
    """A failure case as valid JSON: a NaN or infinite value (a float column's missing value) is null."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in case.items()}


def _quarantine_metadata(spec: TableSpec, partition: str) -> dict:
    """Where a partition's quarantined rows are, and the command that lists them with their reasons (the count
    is `quarantined_rows`)."""
    flag = f" --partition {partition}" if partition else ""
    return {"quarantine_table": quarantine_table(spec.table),
            "quarantine_command": f"provline quarantine show {spec.table}{flag}"}


def _metadata(spec: TableSpec, derived: Derived, partition: str, receipt: Receipt,
              column_lineage: dg.TableColumnLineage | None) -> dict:
    validation = derived.validation
    partition_flag = f" --partition {partition}" if partition else ""
    metadata = {
        "dagster/row_count": receipt.row_count,  # (the column schema is the definition's: fixed by the contract)
        "content_hash": receipt.content_hash,
        "code_version": spec.code_version,
        "input_rows": receipt.row_count + receipt.quarantined_count,
        "quarantined_rows": receipt.quarantined_count,
        # one count per behaviour, as the checks `warnings` and `quarantine` count them
        **{f"{behaviour}_rules_failed": sum(1 for r in validation.results[partition]
                                             if not r.passed and r.rule.behaviour == behaviour)
           for behaviour in dict.fromkeys(r.behaviour for r in spec.rules) if behaviour != BLOCKING},
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
