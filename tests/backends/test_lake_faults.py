"""DuckLake faults against a real PostgreSQL server: unreachable, wrong password, a data path that takes
no file, the catalog lost mid-run. Clear errors, never the password, nothing written, no retry storm."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import pytest

from pipelines.warehouse import Warehouse, WarehouseUnavailable, ducklake
from tests.conftest import materialize

from .conftest import Lake, new_lake, require_postgres
from .pgcluster import PASSWORD_ROLE, free_port, pg_cluster

pytestmark = pytest.mark.filterwarnings("ignore")
SECRET = "s3cret-Pa55"


def events_text(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(f"{e.message or ''} {e.event_specific_data!r}" for e in result.all_events)


def tables_in_catalog(lake: Lake) -> int:
    return int(lake.pg.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", db=lake.database))


def test_unreachable_catalog_names_host_and_port_never_the_password(lake: Lake, monkeypatch):
    port = free_port()  # nothing listens there
    monkeypatch.setenv("PROVLINE_WAREHOUSE", f"{ducklake.PREFIX}dbname=lake host=127.0.0.1 port={port} "
                                             f"user=provline password={SECRET}")
    started = time.monotonic()
    result = materialize("reference")
    elapsed = time.monotonic() - started
    text = events_text(result)
    assert not result.success
    assert f"PostgreSQL 127.0.0.1:{port}" in text and "Connection refused" in text
    assert SECRET not in text
    assert elapsed < 20  # one attempt per process, no retry storm
    assert not lake.data_path.exists() or not any(lake.data_path.rglob("*.parquet"))


def test_wrong_password_is_refused_clearly(lake: Lake, monkeypatch):
    lake.pg.create_role(PASSWORD_ROLE, password="the-right-one")
    lake.pg.psql(f'ALTER DATABASE "{lake.database}" OWNER TO {PASSWORD_ROLE}')
    base = f"{ducklake.PREFIX}dbname={lake.database} host=127.0.0.1 port={lake.pg.port} user={PASSWORD_ROLE}"
    monkeypatch.setenv("PROVLINE_WAREHOUSE", f"{base} password='{SECRET}'")
    with pytest.raises(WarehouseUnavailable) as refused:
        Warehouse.from_settings().setup_for_execution(dg.build_init_resource_context())
    message = str(refused.value)
    assert f"PostgreSQL 127.0.0.1:{lake.pg.port}" in message and "password authentication failed" in message
    assert SECRET not in message and SECRET not in repr(refused.value.__cause__)
    assert tables_in_catalog(lake) == 0  # nothing written, not even the catalog's own tables
    monkeypatch.setenv("PROVLINE_WAREHOUSE", f"{base} password=the-right-one")  # (a DuckDB secret, not the ATTACH)
    right = Warehouse.from_settings()
    assert not right.exists()  # asked with the password, and the catalog is still empty
    right.setup_for_execution(dg.build_init_resource_context())
    assert right.exists() and tables_in_catalog(lake) > 0


def test_asking_whether_a_lake_exists_creates_nothing_and_binds_no_data_path(lake: Lake, tmp_path: Path,
                                                                            monkeypatch, capsys):
    from pipelines.cli import main

    monkeypatch.setenv("PROVLINE_LAKE_DATA_PATH", str(tmp_path / "a-mistyped-path"))
    assert not Warehouse.from_settings().exists()
    assert main(["status"]) == 0 and "no warehouse" in capsys.readouterr().out.lower()
    assert tables_in_catalog(lake) == 0 and not (tmp_path / "a-mistyped-path").exists()
    monkeypatch.setenv("PROVLINE_LAKE_DATA_PATH", str(lake.data_path))  # the right one: the catalog takes it
    assert materialize("reference").success
    ducklake.close_all()  # as another process would ask
    assert Warehouse.from_settings().exists() and tables_in_catalog(lake) > 0
    assert any(lake.data_path.rglob("*.parquet"))


def test_a_data_path_that_takes_no_file_fails_before_any_step_writes(lake: Lake, tmp_path: Path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("PROVLINE_LAKE_DATA_PATH", str(blocker / "lake"))
    result = materialize("reference")
    assert not result.success
    assert f"the lake's data path {blocker / 'lake'}/ is not writable" in events_text(result)
    assert not any(e.is_step_start for e in result.all_events)  # refused at resource setup, before any step
    assert tables_in_catalog(lake) == 0  # the catalog was not even attached (DATA_PATH is kept for good)


@pytest.mark.slow
def test_catalog_lost_mid_run_keeps_the_previous_version_and_a_rerun_succeeds(home, tmp_path: Path, monkeypatch,
                                                                              delivered):
    from pipelines.warehouse import base
    from tests.audit.conftest import DAY, _changed_sources

    require_postgres()
    with pg_cluster() as pg:  # its own server: this test stops it
        pg.create_role("provline")
        lake = new_lake(pg, tmp_path / "lake-data")
        for name, value in lake.env().items():
            monkeypatch.setenv(name, value)
        try:
            assert materialize("reference").success
            assert materialize("flights", DAY).success
            warehouse = Warehouse.from_settings()
            before = versions(warehouse, DAY)

            def stop_server_then_insert(con, target, columns, rows):
                if target == '"staging"."flights"' and pg.root.exists() and not stopped:
                    stopped.append(pg.stop("immediate"))
                return insert_rows(con, target, columns, rows)

            stopped: list = []
            insert_rows = base.insert_rows
            monkeypatch.setattr(base, "insert_rows", stop_server_then_insert)
            monkeypatch.setenv("PROVLINE_SOURCE_DIR", str(_changed_sources(tmp_path / "sources", delivered)))
            failed = materialize("flights", DAY)
            assert stopped and not failed.success
            assert "staging.flights" in events_text(failed) or "staging__flights" in events_text(failed)

            pg.start()
            after = versions(warehouse, DAY)
            assert after["staging.flights"] == before["staging.flights"]  # the previous version, readable
            assert after["marts.flight_facts"] == before["marts.flight_facts"]
            monkeypatch.setattr(base, "insert_rows", insert_rows)
            assert materialize("flights", DAY).success  # the server is back: a re-run succeeds
            assert versions(warehouse, DAY)["staging.flights"] != before["staging.flights"]
        finally:
            ducklake.close_all()


def versions(warehouse: Warehouse, day: str) -> dict[str, tuple]:
    from pipelines.definitions import catalog

    with warehouse.connect() as con:
        out = {}
        for asset in ("staging.flights", "marts.flight_facts"):
            logged = warehouse.latest_version(con, asset, day)["content_hash"]
            out[asset] = (logged, warehouse.content_hashes(con, asset, [day], catalog[asset].daily_on)[day])
        return out
