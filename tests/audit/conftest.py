"""A warehouse materialized once for the audit tests: reference tables and DAY, then DAY again from
a copy of the source data with one changed value (a second version of the flights lineage)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import _isolate, materialize, write_sources

DAY = "2013-01-14"


@dataclass
class Audited:
    home: Path
    before_rerun: datetime  # between the first and the second materialization of DAY
    first_hash: str  # raw.flights [DAY] before the re-materialization
    second_hash: str


def _changed_sources(target: Path, delivered: dict[str, pd.DataFrame]) -> Path:
    """The sources of DAY as delivered, but for one flight that left 7 minutes later (its dep_time and dep_delay:
    the raw contract checks that they agree) and was delivered without its tail number (a departed flight
    without one: staging.flights warns, `departed_flight_has_tailnum`)."""
    write_sources(target, delivered, [DAY])
    flights = pd.read_csv(target / "flights.csv", dtype=str, keep_default_na=False)
    departed = flights["dep_delay"] != "NA"
    first = flights.index[departed & (pd.to_numeric(flights["dep_time"], errors="coerce") % 100 < 53)][0]
    flights.loc[first, "dep_delay"] = str(int(float(flights.loc[first, "dep_delay"])) + 7)
    flights.loc[first, "dep_time"] = str(int(float(flights.loc[first, "dep_time"])) + 7)
    flights.loc[first, "tailnum"] = "NA"
    flights.to_csv(target / "flights.csv", index=False)
    return target


def _raw_flights_hash(home: Path) -> str:
    import duckdb

    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(
            """SELECT content_hash FROM provline.version_log WHERE asset = 'raw.flights' AND partition = ?
               ORDER BY written_at DESC LIMIT 1""", [DAY]).fetchone()[0]


@pytest.fixture(scope="package")
def audited(tmp_path_factory: pytest.TempPathFactory, delivered) -> Iterator[Audited]:
    base = tmp_path_factory.mktemp("audit")
    home = base / "provline"
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, home)
        assert materialize("reference").success
        assert materialize("flights", DAY).success
        first = _raw_flights_hash(home)
        time.sleep(0.05)
        before = datetime.now(UTC)
        time.sleep(0.05)
        mp.setenv("PROVLINE_SOURCE_DIR", str(_changed_sources(base / "sources", delivered)))
        assert materialize("flights", DAY).success
        mp.delenv("PROVLINE_SOURCE_DIR")
        second = _raw_flights_hash(home)
        assert first != second
        yield Audited(home, before, first, second)


@pytest.fixture
def audit_home(audited: Audited, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PROVLINE_HOME pointed at the shared warehouse (read it; copy it before changing anything)."""
    _isolate(monkeypatch, audited.home)
    return audited.home


def contract_results(home: Path, asset: str) -> dict[str, str]:
    """The results of asset [DAY]'s contract rules in its latest run, as the warehouse stored them: rule -> pass /
    warn / fail. (The anomaly monitors, stored beside them, judge nothing without history; lineage leaves them out.)"""
    import duckdb

    from pipelines.definitions import catalog

    rules = [rule.name for rule in catalog[asset].rules]
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        rows = con.execute(
            """SELECT check_name, passed, lower(severity) FROM quality.check_results
               WHERE asset = ? AND partition = ? AND list_contains(?, check_name)
               QUALIFY recorded_at = max(recorded_at) OVER ()""", [asset, DAY, rules]).fetchall()
    return {name: "pass" if passed else "warn" if severity == "warn" else "fail" for name, passed, severity in rows}
