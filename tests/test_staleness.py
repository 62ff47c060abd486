"""Dagster's staleness of partitions built in a range (issue 21, item 1): each partition a range materializes
records the input provenance a one-day run records, so Dagster's stale-status resolver (what the UI's
"Unsynced" reads) calls every partition of a range fresh, and after an upstream change of one day only that
day and what reads it go stale."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver

from pipelines.definitions import catalog, defs
from pipelines.factory import resources

from .conftest import _isolate, local_day, materialize

pytestmark = pytest.mark.slow  # a range run and two one-day runs
DAYS = ["2013-01-14", "2013-01-15", "2013-01-16"]
CHANGED = DAYS[1]
FLIGHTS = [spec.key for spec in catalog if spec.group == "flights"]
RAW_WEATHER, STAGING_WEATHER = dg.AssetKey(["raw", "weather"]), dg.AssetKey(["staging", "weather"])
FLIGHT_FACTS = dg.AssetKey(["marts", "flight_facts"])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dg.DagsterInstance]]:
    """The reference tables, then DAYS of the flights group in one range run, on one instance."""
    tmp = tmp_path_factory.mktemp("staleness")
    instance = dg.DagsterInstance.ephemeral()
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, tmp / "provline")
        assert materialize("reference", instance=instance).success
        assert dg.materialize(list(defs.assets), selection=dg.AssetSelection.groups("flights"), instance=instance,
                              resources=resources(),
                              tags={"dagster/asset_partition_range_start": DAYS[0],
                                    "dagster/asset_partition_range_end": DAYS[-1]}).success
        yield tmp, instance


def _stale(instance: dg.DagsterInstance) -> dict[tuple[str, str], list[str]]:
    """(asset, day) -> why Dagster calls it stale, for every flights asset and day of the range that is not fresh."""
    resolver = get_stale_status_resolver(instance, list(defs.assets))
    return {(key.to_user_string(), day): [f"{c.dependency.asset_key.to_user_string()}: {c.reason}"
                                          for c in resolver.get_stale_causes(key, day)]
            for key in FLIGHTS for day in DAYS if resolver.get_status(key, day) != StaleStatus.FRESH}


def test_every_partition_of_a_range_is_fresh_and_records_its_inputs(built):
    _, instance = built
    assert _stale(instance) == {}
    # the provenance names the same-day event of a partitioned input, the latest of an unpartitioned one
    facts = instance.fetch_materializations(dg.AssetRecordsFilter(FLIGHT_FACTS, asset_partitions=[CHANGED]), 1)
    tags = facts.records[0].asset_materialization.tags
    weather = instance.fetch_materializations(dg.AssetRecordsFilter(STAGING_WEATHER, asset_partitions=[CHANGED]), 1)
    assert tags["dagster/input_event_pointer/staging/weather"] == str(weather.records[0].storage_id)
    assert tags["dagster/input_data_version/staging/weather"] == \
        weather.records[0].asset_materialization.tags["dagster/data_version"]
    airlines = instance.fetch_materializations(dg.AssetKey(["staging", "airlines"]), 1).records[0]
    assert tags["dagster/input_event_pointer/staging/airlines"] == str(airlines.storage_id)


def test_an_upstream_change_of_one_day_makes_only_that_day_and_its_downstream_stale(built, delivered, monkeypatch):
    tmp, instance = built
    _isolate(monkeypatch, tmp / "provline")
    # CHANGED's weather delivered again with one reading corrected: a new content hash for that day only
    weather = delivered["weather"][local_day(delivered["weather"]) == CHANGED].copy()
    weather.loc[weather.index[0], "temp"] = str(float(weather["temp"].iloc[0]) + 1)
    folder = tmp / "sources"
    folder.mkdir()
    weather.to_csv(folder / "weather.csv", index=False)
    monkeypatch.setenv("PROVLINE_SOURCE_DIR", str(folder))
    assert materialize(dg.AssetSelection.assets(RAW_WEATHER), CHANGED, instance=instance).success
    assert _stale(instance) == {("staging/weather", CHANGED): ["raw/weather: has a new dependency data version"]}

    assert materialize(dg.AssetSelection.assets(STAGING_WEATHER), CHANGED, instance=instance).success
    assert _stale(instance) == {("marts/flight_facts", CHANGED): ["staging/weather: has a new dependency data version"]}
