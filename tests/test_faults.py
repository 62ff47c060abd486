"""Atomicity: a failure (exception or kill -9) inside the write leaves the previous version; a step that
cannot get the warehouse lock within PROVLINE_LOCK_TIMEOUT_S fails clearly and writes nothing; a warehouse
session is one connection under the lock, and a failed write inside it rolls back alone."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from pipelines.warehouse import Warehouse, base

from .conftest import DAY, DAY_FLIGHTS, REPO, materialize, query, scalar

pytestmark = pytest.mark.filterwarnings("ignore")


def _state(home):
    return (
        scalar(home, "SELECT count(*) FROM staging.flights"),
        query(home, "SELECT content_hash FROM provline.version_log WHERE asset = 'staging.flights'"),
    )


@pytest.mark.slow
def test_exception_after_delete_keeps_previous_rows(home, monkeypatch):
    assert materialize("reference").success
    assert materialize("flights", DAY).success
    before = _state(home)
    deleted = []

    def fail_after_delete(con, target, columns, rows):
        # the DELETE of the partition has run in this transaction: prove it, then fail
        deleted.append(con.execute(f"SELECT count(*) FROM {target}").fetchone()[0])
        raise RuntimeError("disk full (injected)")

    monkeypatch.setattr(base, "insert_rows", fail_after_delete)
    result = materialize("flights", DAY)
    assert not result.success
    assert 0 in deleted  # staging.flights held only this partition: the delete had emptied it
    assert _state(home) == before
    assert scalar(home, "SELECT count(*) FROM raw.flights") == DAY_FLIGHTS


@pytest.mark.slow
def test_kill_9_inside_the_write_keeps_previous_rows(home):
    assert materialize("reference").success
    assert materialize("flights", DAY).success
    before = _state(home)
    script = textwrap.dedent(f"""
        import os, signal
        import dagster as dg
        from pipelines.definitions import defs
        from pipelines.warehouse import base

        def die_after_delete(con, target, columns, rows):
            if target == '"staging"."flights"':
                os.kill(os.getpid(), signal.SIGKILL)
            return original(con, target, columns, rows)

        original = base.insert_rows
        base.insert_rows = die_after_delete
        dg.materialize(list(defs.assets), selection=dg.AssetSelection.groups("flights"), partition_key="{DAY}",
                       resources=defs.resources)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=os.environ.copy(), capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert _state(home) == before


KILLS = {  # where: (the table, the function of base.py that dies once it has written, and when)
    "unpartitioned replace": ("planes", "insert_rows", """args[1] == '"staging"."planes"'"""),
    "quarantine write": ("weather", "_replace_quarantine", "args[1].table == 'staging.weather'"),
    "version-log write": ("weather", "insert_frame",
                          "args[1] == 'provline.version_log' and args[2]['asset'][0] == 'staging.weather'"),
}


def _table_state(home: Path, table: str) -> list[list[tuple]]:
    """Its rows, its quarantined rows and its version log."""
    return [
        query(home, f"SELECT count(*), sum(hash(t)) FROM {table} AS t"),
        query(home, f"SELECT count(*), sum(hash(t)) FROM {base.quarantine_table(table)} AS t"),
        query(home, "SELECT content_hash, row_count, quarantined_count FROM provline.version_log WHERE asset = ? "
                    "ORDER BY written_at", [table]),
    ]


def _deliver_again(folder: Path) -> None:
    """A delivery that changes each write: 10 planes fewer, a 2,000 mph wind reading (quarantined)."""
    planes = pd.read_csv(folder / "planes.csv", dtype=str)
    planes.iloc[10:].to_csv(folder / "planes.csv", index=False)
    weather = pd.read_csv(folder / "weather.csv", dtype=str)
    weather.loc[weather.index[5], "wind_speed"] = "2000"
    weather.to_csv(folder / "weather.csv", index=False)


@pytest.mark.slow
@pytest.mark.parametrize("where", list(KILLS))
def test_kill_9_in_each_part_of_the_write_keeps_the_previous_version(source_dir, home, where):
    name, function, condition = KILLS[where]
    keys, partition = [["raw", name], ["staging", name]], (DAY if name == "weather" else None)
    selection = dg.AssetSelection.assets(*keys)
    assert materialize(selection, partition).success
    before = _table_state(home, f"staging.{name}")
    assert before[2], "nothing was written before the kill"
    _deliver_again(source_dir)
    script = textwrap.dedent(f"""
        import os, signal
        import dagster as dg
        from pipelines.definitions import defs
        from pipelines.warehouse import base

        def die_once_written(*args):
            done = original(*args)
            if {condition}:
                os.kill(os.getpid(), signal.SIGKILL)
            return done

        original = base.{function}
        base.{function} = die_once_written
        dg.materialize(list(defs.assets), selection=dg.AssetSelection.assets(*{keys}), partition_key={partition!r},
                       resources=defs.resources)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=os.environ.copy(), capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert _table_state(home, f"staging.{name}") == before


def test_a_step_that_cannot_get_the_warehouse_lock_fails_clearly_and_writes_nothing(home, monkeypatch):
    lock = home / "warehouse.lock"
    home.mkdir(parents=True)
    holder = subprocess.Popen(  # another process holds the warehouse lock, as a long step would
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
         "print('held', flush=True); time.sleep(120)", str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        monkeypatch.setenv("PROVLINE_LOCK_TIMEOUT_S", "1")
        started = time.monotonic()
        result = materialize(dg.AssetSelection.assets(dg.AssetKey(["raw", "airlines"])))
        waited = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    assert not result.success
    (failure,) = [e.event_specific_data.error.cause for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.cls_name == "WarehouseLockTimeout"  # after the step's retry, which waited as long
    assert [e.event_type_value for e in result.all_events].count("STEP_UP_FOR_RETRY") == 1  # transient: once more
    assert failure.message.startswith(
        f"pipelines.warehouse.duckdb_file.WarehouseLockTimeout: waited 1s for the warehouse lock {lock}; another "
        "step holds it (raise PROVLINE_LOCK_TIMEOUT_S for long backfills)")
    assert waited >= 1
    assert not (home / "warehouse.duckdb").exists()


def _lock_is_free(lock: Path) -> bool:
    with open(lock, "a+") as handle:  # a second open file: flock conflicts with the session's, even in-process
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


def test_a_warehouse_session_is_one_connection_under_the_lock_and_a_failed_write_inside_it_changes_nothing(home):
    warehouse = Warehouse(home=str(home))
    lock = warehouse.backend.lock_path
    with warehouse.session():
        with warehouse.connect() as first, warehouse.connect() as second:
            assert first is second
        assert not _lock_is_free(lock)  # held for the whole session
        warehouse.backend.transact(lambda con: con.execute("CREATE TABLE t AS SELECT 1 AS x"), "create", "t", [""])

        def half_written(con):
            con.execute("INSERT INTO t VALUES (2)")
            raise RuntimeError("disk full (injected)")

        with pytest.raises(RuntimeError, match="disk full"):
            warehouse.backend.transact(half_written, "insert", "t", [""])
        with warehouse.connect() as con:  # the session goes on after a rolled-back write
            assert con.execute("SELECT x FROM t").fetchall() == [(1,)]
    assert _lock_is_free(lock)
    with warehouse.connect() as con:  # a fresh connection: the first write was committed, the second not
        assert con.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_a_transform_error_fails_the_step_once_naming_it(home: Path, tmp_path: Path):
    """Only what may pass on a second try is retried (a lock, I/O, a commit conflict): a transform's TypeError
    fails the step at once, saying what it was, and writes nothing."""
    from pipelines.domain import production_asset
    from pipelines.factory import build_asset, resources
    from pipelines.sources import Source
    from tests.test_domains import Readings

    (tmp_path / "readings.csv").write_text("day,sensor,value\n2024-01-01,a,1.5\n")

    @production_asset("raw.readings", contract=Readings, source=Source("readings", tmp_path), key_columns=["sensor"])
    def raw_readings(readings: pd.DataFrame) -> pd.DataFrame:
        return readings.assign(value=readings["value"].to_numpy().tolist() + "a bug")

    result = dg.materialize([build_asset(raw_readings)], resources=resources(Warehouse(home=str(home))),
                            raise_on_error=False)
    kinds = [e.event_type_value for e in result.all_events]
    assert kinds.count("STEP_FAILURE") == 1 and "STEP_UP_FOR_RETRY" not in kinds
    (failure,) = [e.event_specific_data for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.user_failure_data.description.startswith("TypeError: ")
    assert not (home / "warehouse.duckdb").exists() or query(
        home, "SELECT count(*) FROM provline.version_log") == [(0,)]
