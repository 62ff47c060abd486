"""Every private Dagster name the runtime uses, in one place: Dagster 1.13 exports no public form of these.

- ASSET_PARTITION_RANGE_START_TAG / _END_TAG: the run tags of a single-run backfill of a partition range, how a run
  says which range it builds (Dagster's documented way to launch one, dagster-io/dagster discussion #11653); the
  constants are not exported.
- RUN_FAILURE_REASON_TAG, RunFailureReason: why Dagster ended a run FAILURE (UNEXPECTED_TERMINATION: its process
  went away, e.g. an interrupt between two steps); DagsterRun has no public accessor for it.
- RetryMode: the type of Executor.retries, which an executor wrapping another (pipelines/lineage/runs.py) returns.
- TimeWindowFreshnessPolicy: what FreshnessPolicy.time_window() returns; only the abstract base is exported, and
  its windows can be read only after an isinstance check against it.
- AssetCheckEvaluationTargetMaterializationData: the type of the public AssetCheckEvaluation's
  target_materialization_data (the materialization a check evaluated).
- EVENTS_REPORTED: an Output whose metadata carries this key tells Dagster the step reported its asset events itself;
  without it Dagster copies one DataVersion onto every partition of a range (dagster-io/dagster#34013).
- UNGATED_CHECK_LOGGER: the logger of Dagster's step planner (see `quiet_ungated_check_notice`).
- The data provenance tags of a materialization (DATA_VERSION_TAG, CODE_VERSION_TAG,
  DATA_VERSION_IS_USER_PROVIDED_TAG, get_input_data_version_tag, get_input_event_pointer_tag, DEFAULT_DATA_VERSION,
  NULL_EVENT_POINTER, extract_data_version_from_entry): a range reports each partition's materialization itself and
  must write what Dagster writes on a one-partition one, which its staleness reads (factory.input_provenance).
- InMemoryJob, create_execution_plan, execute_run, JobExecutionResult, RemoteJobOrigin, RemoteRepositoryOrigin,
  SINGLETON_REPOSITORY_NAME, snapshot_from_execution_plan, location_origin_from_module_name: `provline run` creates a
  run with the code location's origin and executes it in process (pipelines/launch.py); Dagster's public in-process
  APIs record no origin, so the job page and the timeline would not list the run.

Each is imported here and nowhere else in pipelines/; tests/test_dagster_internals.py checks each one against the
installed Dagster, so an upgrade that moves or changes one fails there, by name, rather than in a run.
"""

from __future__ import annotations

import logging

from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationTargetMaterializationData
from dagster._core.definitions.data_version import (
    CODE_VERSION_TAG,
    DATA_VERSION_IS_USER_PROVIDED_TAG,
    DATA_VERSION_TAG,
    DEFAULT_DATA_VERSION,
    NULL_EVENT_POINTER,
    extract_data_version_from_entry,
    get_input_data_version_tag,
    get_input_event_pointer_tag,
)
from dagster._core.definitions.freshness import TimeWindowFreshnessPolicy
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.definitions.repository_definition import SINGLETON_REPOSITORY_NAME
from dagster._core.definitions.source_asset import SYSTEM_METADATA_KEY_SOURCE_ASSET_OBSERVATION as EVENTS_REPORTED
from dagster._core.events import RunFailureReason
from dagster._core.execution.api import create_execution_plan, execute_run
from dagster._core.execution.job_execution_result import JobExecutionResult
from dagster._core.execution.retries import RetryMode
from dagster._core.remote_origin import RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.snap import snapshot_from_execution_plan
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    RUN_FAILURE_REASON_TAG,
)
from dagster._core.workspace.load import location_origin_from_module_name

__all__ = [
    "ASSET_PARTITION_RANGE_END_TAG", "ASSET_PARTITION_RANGE_START_TAG", "CODE_VERSION_TAG",
    "DATA_VERSION_IS_USER_PROVIDED_TAG", "DATA_VERSION_TAG", "DEFAULT_DATA_VERSION", "EVENTS_REPORTED",
    "NULL_EVENT_POINTER", "RUN_FAILURE_REASON_TAG", "SINGLETON_REPOSITORY_NAME", "UNGATED_CHECK_LOGGER",
    "AssetCheckEvaluationTargetMaterializationData", "InMemoryJob", "JobExecutionResult", "RemoteJobOrigin",
    "RemoteRepositoryOrigin", "RetryMode", "RunFailureReason", "TimeWindowFreshnessPolicy", "create_execution_plan",
    "execute_run", "extract_data_version_from_entry", "get_input_data_version_tag", "get_input_event_pointer_tag",
    "location_origin_from_module_name", "quiet_ungated_check_notice", "snapshot_from_execution_plan",
]

UNGATED_CHECK_LOGGER = "dagster._core.execution.plan.active"
"""The logger of Dagster's step planner, which says a downstream step "will proceed without gating" on a blocking
check that emitted no check output."""


class ChecksReportedPerPartition(logging.Filter):
    """A range step reports its check results per partition (AssetCheckEvaluation events) instead of as the
    check outputs Dagster gates steps on, and blocks failed partitions downstream itself; Dagster's notice
    that the next step "will proceed without gating" on those outputs is expected, not a problem."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "will proceed without gating" not in record.getMessage()


def quiet_ungated_check_notice() -> None:
    """Leave that notice out of this process's logs (once; the factory calls it when it builds an asset, so every
    process that plans a provline asset's steps has it: the notice is logged where the plan runs, after the
    range step, so a step or an executor cannot scope it — `dg.materialize` brings its own executor)."""
    logger = logging.getLogger(UNGATED_CHECK_LOGGER)
    if not any(isinstance(f, ChecksReportedPerPartition) for f in logger.filters):
        logger.addFilter(ChecksReportedPerPartition())
