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


# --- the backend's own parts, without a server ------------------------------------------------------------


def test_the_backend_is_built_once_and_a_copy_with_other_values_gets_its_own(home: Path):
    warehouse = Warehouse(home=str(home))
    assert warehouse.backend is warehouse.backend is Warehouse(home=str(home)).backend
    other = warehouse.model_copy(update={"lock_timeout_s": 2.0})
    assert other.backend is not warehouse.backend and other.backend.lock_timeout_s == 2.0


def test_the_lakes_version_log_is_the_files_without_the_snapshot_column():
    import duckdb

    from pipelines.warehouse.base import META_DDL
    from pipelines.warehouse.ducklake import LAKE_META_DDL

    def version_log(ddl: str) -> list[tuple]:
        with duckdb.connect() as con:
            con.execute(ddl)
            return con.execute("SELECT column_name, data_type, is_nullable FROM information_schema.columns "
                               "WHERE table_name = 'version_log' ORDER BY ordinal_position").fetchall()

    file, lake = version_log(META_DDL), version_log(LAKE_META_DDL)
    assert ("snapshot_id", "BIGINT", "YES") in file
    assert lake == [column for column in file if column[0] != "snapshot_id"]
    assert [c for c, *_ in lake][-2:] == ["written_at", "contract_version"]


def test_conninfo_goes_through_libpqs_parser_and_the_password_stays_out_of_it(tmp_path: Path):
    from pipelines.warehouse.ducklake import DuckLake, format_conninfo, parse_conninfo

    fields = parse_conninfo("dbname=lake host=db.internal port=5433 user='pro vline' password='it\\'s s3cr3t'")
    assert fields == {"dbname": "lake", "host": "db.internal", "port": "5433", "user": "pro vline",
                      "password": "it's s3cr3t"}
    assert parse_conninfo(format_conninfo(fields)) == fields  # quoting round-trips
    assert parse_conninfo("postgresql://provline:s3cr3t@db.internal:5433/lake?sslmode=require") == {
        "user": "provline", "password": "s3cr3t", "host": "db.internal", "port": "5433", "dbname": "lake",
        "sslmode": "require"}
    lake = DuckLake("postgresql://provline:s3cr3t@db.internal/lake", str(tmp_path), "warehouse", 1, 1, "1GB",
                    tmp_path / "spill")
    assert lake.password == "s3cr3t" and "s3cr3t" not in lake.conninfo
    assert parse_conninfo(lake.conninfo) == {"user": "provline", "host": "db.internal", "dbname": "lake",
                                             "connect_timeout": "10"}


@pytest.mark.parametrize(("conninfo", "message"), [
    ("dbname=lake pasword=s3cr3t", "unknown libpq connection option 'pasword'"),
    ("postgresql://u:s3cr3t@h/lake?sslmod=require", "unknown libpq connection option 'sslmod'"),
    ("dbname=lake password=s3cr3t and more", 'not a libpq conninfo .*missing "=" after "…"'),
    ("dbname=lake password='s3cr3t", "not a libpq conninfo .*unterminated quoted string"),
    ("postgresql://u:s3cr3t%zz@h/lake", 'not a libpq conninfo .*invalid percent-encoded token: "…"'),
])
def test_a_bad_conninfo_is_a_clear_error_that_never_shows_the_password(home: Path, conninfo: str, message: str):
    warehouse = Warehouse(home=str(home), url="ducklake:postgres:" + conninfo, lake_data_path=str(home / "lake"))
    with pytest.raises(ValueError, match=f"^PROVLINE_WAREHOUSE: {message}") as raised:
        print(warehouse.location)  # (building the backend parses the conninfo)
    assert "s3cr3t" not in str(raised.value) and "more" not in str(raised.value)
