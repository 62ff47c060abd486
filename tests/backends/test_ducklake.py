"""The DuckLake backend against a real PostgreSQL server: the same pipeline, the same hashes as the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.warehouse import Warehouse
from tests.conftest import DAY, DAY_FLIGHTS, materialize
from tests.lineage.lineage_support import validate

from .conftest import Lake

DAYS = [DAY, "2013-01-16"]
LATEST = """SELECT asset, partition, content_hash, row_count, quarantined_count FROM provline.version_log
            QUALIFY row_number() OVER (PARTITION BY asset, partition
                                       ORDER BY snapshot_id DESC NULLS LAST, written_at DESC) = 1
            ORDER BY asset, partition"""


def build(days: list[str]) -> None:
    assert materialize("reference").success
    for day in days:
        assert materialize("flights", day).success


def latest(warehouse: Warehouse) -> list[tuple]:
    with warehouse.connect() as con:
        return con.execute(LATEST).fetchall()


def agrees_with_tables(warehouse: Warehouse) -> None:
    """Every partition's latest version-log hash is what its table holds now."""
    from pipelines.definitions import catalog

    with warehouse.connect() as con:
        for asset, partition, content_hash, row_count, _ in con.execute(LATEST).fetchall():
            spec = catalog[asset]
            assert warehouse.content_hashes(con, asset, [partition], spec.daily_on)[partition] == content_hash
            rows = len(warehouse.read(con, asset, [partition], spec.daily_on))
            assert rows == row_count, (asset, partition)


@pytest.mark.slow
def test_reference_and_two_days_equal_the_file_backend(lake: Lake, home: Path, tmp_path: Path, monkeypatch):
    build(DAYS)
    on_lake = Warehouse.from_settings()
    lake_versions = latest(on_lake)
    agrees_with_tables(on_lake)
    events = [json.loads(line) for line in (home / "lineage" / "events.jsonl").read_text().splitlines()]
    outputs = {(o["namespace"], o["name"]) for e in events for o in e.get("outputs", [])}
    assert (f"ducklake://127.0.0.1:{lake.pg.port}/{lake.database}", "marts.flight_facts") in outputs

    monkeypatch.setenv("PROVLINE_HOME", str(tmp_path / "file-home"))
    monkeypatch.delenv("PROVLINE_WAREHOUSE")
    build(DAYS)
    file_versions = latest(Warehouse.from_settings())

    assert lake_versions == file_versions
    assert len(lake_versions) == 6 + 7 * len(DAYS)  # 6 unpartitioned tables, 7 daily ones per day
    assert ("raw.flights", DAY) in {(a, p) for a, p, *_ in lake_versions}
    assert next(r for a, p, _, r, _ in lake_versions if (a, p) == ("raw.flights", DAY)) == DAY_FLIGHTS
    with on_lake.connect() as con:
        snapshots = con.execute("SELECT snapshot_id FROM provline.version_log").fetchall()
        failures = con.execute("SELECT asset, partition, check_name, count(*) FROM quality.failures "
                               "GROUP BY ALL ORDER BY ALL").fetchall()
    assert all(s is not None for (s,) in snapshots)
    assert len({s for (s,) in snapshots}) == len(snapshots) == len(lake_versions)  # one commit each
    assert failures  # the real data's defects are recorded on both backends alike
    validate(home / "lineage" / "events.jsonl")  # the lake's events against the official schemas (last: may skip)


@pytest.mark.slow
def test_verify_reads_versions_by_time_travel_until_they_expire(lake: Lake, tmp_path: Path, monkeypatch, delivered):
    from pipelines.definitions import catalog
    from pipelines.verify import CANNOT, REPRODUCED, verify
    from tests.audit.conftest import DAY, _changed_sources  # a day whose source they change

    build([DAY])
    warehouse = Warehouse.from_settings()
    first = dict(((a, p), h) for a, p, h, *_ in latest(warehouse))
    monkeypatch.setenv("PROVLINE_SOURCE_DIR", str(_changed_sources(tmp_path / "sources", delivered)))
    assert materialize("flights", DAY).success
    monkeypatch.delenv("PROVLINE_SOURCE_DIR")
    second = dict(((a, p), h) for a, p, h, *_ in latest(warehouse))
    assert first[("staging.flights", DAY)] != second[("staging.flights", DAY)]

    def check(table: str, version: str | None = None):
        return verify(table, DAY, version, tables=catalog.specs, warehouse=warehouse)

    now = check("marts.carrier_daily_performance")
    assert now.verdict == REPRODUCED, now.text()
    old = check("marts.flight_facts", first[("marts.flight_facts", DAY)])  # its inputs: AT (VERSION => n)
    assert old.verdict == REPRODUCED, old.text()
    assert {i["name"]: i["loaded"] for i in old.inputs}["staging.flights"] == first[("staging.flights", DAY)]

    # retention: DuckLake expires every snapshot older than 0 days but the latest
    assert "snapshots before" in Warehouse.from_settings().model_copy(update={"snapshot_retention_days": 0}).maintain()
    gone = check("marts.flight_facts", first[("marts.flight_facts", DAY)])
    assert gone.verdict == CANNOT and "expired" in " ".join(gone.reasons), gone.text()
    assert check("marts.carrier_daily_performance").verdict == REPRODUCED  # the latest versions stay
