"""The runs `provline run` makes: each domain's own jobs, executed in this process as runs of the code location.

A run of a domain's job (`flights_daily` for a day or a range, `reference_tables`) is what the UI knows: it is
listed on the job's page and in the Overview timeline, "Re-execute" works (the UI re-launches the job of the code
location that `workspace.yaml` loads), and OpenLineage names the run after the job, as it names a scheduled or
sensor run of it. For that a run must carry the job's remote origin — its code location and repository, which
the UI matches runs by — as runs launched by the UI, a schedule or a sensor do; Dagster's in-process APIs
(`materialize`, `execute_in_process`, `execute_job`) record none, so a run here is created with it and then
executed in this process (Ctrl-C, SIGTERM and a cancel through the instance end it as before). Only cli.py
imports this module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

import pipelines.definitions
from pipelines.dagster_internals import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    SINGLETON_REPOSITORY_NAME,
    InMemoryJob,
    JobExecutionResult,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
    create_execution_plan,
    execute_run,
    location_origin_from_module_name,
    snapshot_from_execution_plan,
)
from pipelines.definitions import build_definitions, domains
from pipelines.warehouse import Warehouse

CODE_LOCATION_MODULE = pipelines.definitions.__name__
"""The module workspace.yaml loads (`python_module`, no `location_name`): Dagster names the code location after it."""


@dataclass(frozen=True)
class JobRun:
    """One run to make: a job, the assets of it to materialize (None: all of them), and its days (None:
    unpartitioned)."""

    job: dg.JobDefinition
    assets: frozenset[dg.AssetKey] | None
    days: list[str] | None


def plan(warehouse: Warehouse, days_of: Callable[[dg.PartitionsDefinition], list[str]],
         with_unpartitioned: bool = True) -> list[JobRun]:
    """The domains' jobs to run, unpartitioned ones first (the daily tables read them). Each asset is run by the first
    job that selects it; one in no domain job goes with Dagster's own asset job. `days_of(partitions)`: the days of
    those partitions to build."""
    definitions = build_definitions(domains, warehouse)  # the warehouse as configured now, not at import
    jobs = definitions.resolve_all_job_defs()
    ordered = sorted((job for job in jobs if not job.name.startswith("__")),
                     key=lambda job: job.partitions_def is not None)
    ordered += [job for job in jobs if job.name.startswith("__")]  # Dagster's own: whatever no domain job runs
    runs, covered = [], set()
    for job in ordered:
        keys = job.asset_layer.selected_asset_keys - covered
        covered |= keys
        by_partitions: dict[dg.PartitionsDefinition | None, set[dg.AssetKey]] = {}
        for key in keys:
            by_partitions.setdefault(definitions.resolve_assets_def(key).partitions_def, set()).add(key)
        for partitions, selected in by_partitions.items():
            if partitions is None and not with_unpartitioned:
                continue
            whole = selected == job.asset_layer.selected_asset_keys
            days = days_of(partitions) if partitions else None
            runs.append(JobRun(job, None if whole else frozenset(selected), days))
    return sorted(runs, key=lambda run: run.days is not None)


def run_tags(days: Sequence[str] | None) -> dict[str, str]:
    """A day is a partition; a range is one run over the job's partitions (the assets' backfill policy is
    single-run)."""
    if not days:
        return {}
    if len(days) == 1:
        return {"dagster/partition": days[0]}
    return {ASSET_PARTITION_RANGE_START_TAG: days[0], ASSET_PARTITION_RANGE_END_TAG: days[-1]}


def job_origin(job_name: str) -> RemoteJobOrigin:
    """The job as the code location of workspace.yaml serves it: the origin the UI matches runs by."""
    location = location_origin_from_module_name(CODE_LOCATION_MODULE, None, str(Path(__file__).parents[1]))
    return RemoteRepositoryOrigin(location, SINGLETON_REPOSITORY_NAME).get_job_origin(job_name)


def execute(instance: dg.DagsterInstance, run: JobRun, tags: dict[str, str],
            without_checks: bool = False) -> JobExecutionResult:
    """Create the run of `run.job` with its remote origin, then execute it here. `without_checks`: Dagster plans
    no asset check (the steps report each check once for the run, see factory.CHECKS_PER_RUN_TAG).

    Written out because `instance.create_run_for_job` takes no check selection (it plans every check of the
    selected assets); otherwise this is what it does."""
    job, assets = run.job, run.assets
    checks = frozenset() if without_checks else None
    if without_checks and assets is None:
        assets = frozenset(job.asset_layer.selected_asset_keys)
    subset = job.get_subset(asset_selection=assets, asset_check_selection=checks) if assets is not None else job
    tags = {**run_tags(run.days), **tags}
    execution_plan = create_execution_plan(subset, tags=tags,
                                           instance_ref=instance.get_ref() if instance.is_persistent else None)
    created = instance.create_run(
        job_name=job.name, run_id=None, run_config={}, status=None, tags=tags, root_run_id=None, parent_run_id=None,
        step_keys_to_execute=execution_plan.step_keys_to_execute,
        execution_plan_snapshot=snapshot_from_execution_plan(execution_plan, subset.get_job_snapshot_id()),
        job_snapshot=subset.get_job_snapshot(), parent_job_snapshot=subset.get_parent_job_snapshot(),
        asset_selection=assets, asset_check_selection=checks, resolved_op_selection=None, op_selection=None,
        remote_job_origin=job_origin(job.name),
        job_code_origin=None, asset_graph=subset.asset_layer.asset_graph,
    )
    return execute_run(InMemoryJob(job), created, instance)

