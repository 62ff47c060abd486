"""The private Dagster names the runtime relies on (pipelines/dagster_internals.py), checked against the installed
Dagster: an upgrade that moves, renames or changes one fails here, by name."""

from __future__ import annotations

import logging
import typing
from datetime import timedelta

import dagster as dg
import pytest

from pipelines import dagster_internals as internals

DAYS = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-04")


def test_the_run_tags_and_reasons_have_the_values_runs_carry():
    assert internals.ASSET_PARTITION_RANGE_START_TAG == "dagster/asset_partition_range_start"
    assert internals.ASSET_PARTITION_RANGE_END_TAG == "dagster/asset_partition_range_end"
    assert internals.RUN_FAILURE_REASON_TAG == "dagster/failure_reason"
    assert internals.RunFailureReason.UNEXPECTED_TERMINATION.value == "UNEXPECTED_TERMINATION"


def test_the_types_are_the_ones_the_public_api_takes_and_returns():
    assert typing.get_type_hints(dg.Executor.retries.fget)["return"] is internals.RetryMode
    policy = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=2), warn_window=timedelta(hours=1))
    assert isinstance(policy, internals.TimeWindowFreshnessPolicy)
    assert (policy.fail_window.to_timedelta(), policy.warn_window.to_timedelta()) == (timedelta(hours=2),
                                                                                    timedelta(hours=1))
    target = internals.AssetCheckEvaluationTargetMaterializationData(storage_id=7, run_id="r", timestamp=1.0)
    evaluation = dg.AssetCheckEvaluation(asset_key=dg.AssetKey("t"), check_name="c", passed=True,
                                         target_materialization_data=target)
    assert evaluation.target_materialization_data.storage_id == 7


def _range_asset(mark_reported: bool) -> dg.AssetsDefinition:
    @dg.multi_asset(specs=[dg.AssetSpec("t", partitions_def=DAYS)], partitions_def=DAYS, can_subset=True,
                    backfill_policy=dg.BackfillPolicy.single_run())
    def t(context):  # (no annotation: Dagster inspects it, and annotations here are strings)
        for day in context.partition_keys:
            yield dg.AssetMaterialization(asset_key="t", partition=day, tags={"dagster/data_version": f"v-{day}"})
        yield dg.Output(None, output_name="t", metadata={internals.EVENTS_REPORTED: True} if mark_reported else {})

    return t


@pytest.mark.parametrize("mark_reported", [True, False])
def test_a_range_step_that_reported_its_events_gets_no_copies_of_them(mark_reported: bool):
    instance = dg.DagsterInstance.ephemeral()
    tags = {internals.ASSET_PARTITION_RANGE_START_TAG: "2024-01-01", internals.ASSET_PARTITION_RANGE_END_TAG:
            "2024-01-03"}
    assert dg.materialize([_range_asset(mark_reported)], instance=instance, tags=tags).success
    records = instance.fetch_materializations(dg.AssetKey("t"), limit=100).records
    by_day: dict[str, list[str | None]] = {}
    for record in records:
        materialization = record.asset_materialization
        by_day.setdefault(materialization.partition, []).append(materialization.tags.get("dagster/data_version"))
    if mark_reported:  # what the factory relies on: one materialization per day, with its own data version
        assert by_day == {day: [f"v-{day}"] for day in ["2024-01-01", "2024-01-02", "2024-01-03"]}
    else:  # (the control: without the key Dagster adds its own materializations, dagster-io/dagster#34013)
        assert all(len(versions) == 2 for versions in by_day.values())


def test_the_ungated_check_notice_comes_from_the_logger_that_is_quieted(caplog: pytest.LogCaptureFixture):
    @dg.multi_asset(specs=[dg.AssetSpec("up")], check_specs=[dg.AssetCheckSpec("c", asset="up", blocking=True)],
                    can_subset=True)
    def up():
        yield dg.Output(None, output_name="up")  # no check output, as a range step

    @dg.asset(deps=["up"])
    def down() -> None:
        pass

    logger = logging.getLogger(internals.UNGATED_CHECK_LOGGER)
    saved = list(logger.filters)
    try:
        for f in saved:
            logger.removeFilter(f)
        with caplog.at_level(logging.WARNING, logger=internals.UNGATED_CHECK_LOGGER):
            assert dg.materialize([up, down]).success
        notices = [r for r in caplog.records if "will proceed without gating" in r.getMessage()]
        assert [r.name for r in notices] == [internals.UNGATED_CHECK_LOGGER]
        caplog.clear()
        internals.quiet_ungated_check_notice()
        internals.quiet_ungated_check_notice()  # once
        assert sum(isinstance(f, internals.ChecksReportedPerPartition) for f in logger.filters) == 1
        with caplog.at_level(logging.WARNING, logger=internals.UNGATED_CHECK_LOGGER):
            assert dg.materialize([up, down]).success
        assert not [r for r in caplog.records if "will proceed without gating" in r.getMessage()]
    finally:
        for f in list(logger.filters):
            logger.removeFilter(f)
        for f in saved:
            logger.addFilter(f)
