"""Many writers on one DuckLake, no lock: optimistic commits, whole transactions retried on conflict."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from pipelines.rows import Rows
from pipelines.sql import PARTITION
from pipelines.warehouse import CommitConflict, Warehouse, Write, ducklake
from tests.conftest import DAY, REPO, materialize

from .conftest import Lake
from .test_ducklake import LATEST, agrees_with_tables

pytestmark = pytest.mark.filterwarnings("ignore")


def write(day: str, value: int, run_id: str) -> Write:
    rows = pd.DataFrame({"day": pd.to_datetime([day] * 3), "v": [value] * 3, PARTITION: day})
    return Write(table="raw.t", partition_expr="day", columns={"day": "DATE", "v": "BIGINT"}, code_version="c",
                 run_id=run_id, partitions=[day], rows=Rows.load(rows))


def interloper(lake_backend: ducklake.DuckLake, times: int):
    """A write_partitions that lets another writer commit to the same table first, `times` times."""
    other = lake_backend._open()  # a second DuckDB instance on the same lake: another host
    done = []

    def write_partitions(con, w):
        receipts = original(con, w)
        if len(done) < times:
            done.append(1)
            other.execute('BEGIN; DELETE FROM "raw"."t" WHERE day = DATE \'2013-01-02\'; '
                          'INSERT INTO "raw"."t" VALUES (DATE \'2013-01-02\', 99); COMMIT')
        return receipts

    original = ducklake.write_partitions
    return write_partitions, done


@pytest.mark.slow
def test_a_conflicting_commit_is_retried_whole_and_logged(lake: Lake, monkeypatch, caplog):
    warehouse = Warehouse.from_settings()
    warehouse.commit(write("2013-01-01", 1, "run-1"))
    patched, done = interloper(warehouse.backend, times=3)
    monkeypatch.setattr(ducklake, "write_partitions", patched)
    with caplog.at_level(logging.WARNING, logger="provline.warehouse"):
        receipt = warehouse.commit(write("2013-01-01", 2, "run-2"))["2013-01-01"]
    assert len(done) == 3
    assert [r.message.count("commit conflict") for r in caplog.records] == [1, 1, 1]
    assert "another transaction" in caplog.records[0].message
    with warehouse.connect() as con:
        assert con.execute('SELECT day::VARCHAR, v, count(*) FROM raw.t GROUP BY ALL ORDER BY ALL').fetchall() == [
            ("2013-01-01", 2, 3), ("2013-01-02", 99, 1)]  # our retried write and the other writer's: none lost
        log = con.execute("SELECT run_id, snapshot_id FROM provline.version_log ORDER BY snapshot_id").fetchall()
    assert [run for run, _ in log] == ["run-1", "run-2"]  # the lost attempts left no version-log row
    assert log[-1][1] == receipt.snapshot_id


@pytest.mark.slow
def test_a_conflict_that_outlasts_the_budget_fails_clearly_and_writes_nothing(lake: Lake, monkeypatch):
    warehouse = Warehouse.from_settings().model_copy(update={"lock_timeout_s": 2.0})
    warehouse.commit(write("2013-01-01", 1, "run-1"))
    patched, done = interloper(warehouse.backend, times=10_000)
    monkeypatch.setattr(ducklake, "write_partitions", patched)
    with pytest.raises(CommitConflict, match=r"raw\.t \[2013-01-01\]: other writers' commits conflicted .*"
                                             r"nothing of it was written.*PROVLINE_LOCK_TIMEOUT_S"):
        warehouse.commit(write("2013-01-01", 2, "run-2"))
    assert len(done) >= 2
    with warehouse.connect() as con:
        assert con.execute("SELECT DISTINCT v FROM raw.t WHERE day = DATE '2013-01-01'").fetchall() == [(1,)]
        assert con.execute("SELECT run_id FROM provline.version_log").fetchall() == [("run-1",)]


def host(home: Path, lake: Lake, day: str) -> subprocess.Popen:
    """Another machine: its own PROVLINE_HOME and Dagster instance; only the catalog and data path shared."""
    env = {**os.environ, **lake.env(), "PROVLINE_HOME": str(home)}
    env.pop("DAGSTER_HOME", None)
    return subprocess.Popen(
        [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "pipelines.definitions",
         "--select", "group:flights", "--partition", day],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_two_hosts_write_different_days_and_the_same_day_at_once(lake: Lake, tmp_path: Path):
    assert materialize("reference").success  # (also creates the catalog once, before the hosts race)
    other = "2013-01-16"
    rounds = [((tmp_path / "a", DAY), (tmp_path / "b", other)), ((tmp_path / "a", DAY), (tmp_path / "b", DAY))]
    retries = 0
    for pair in rounds:
        procs = [host(home, lake, day) for home, day in pair]
        outputs = [p.communicate(timeout=600)[0] for p in procs]
        for proc, out in zip(procs, outputs, strict=True):
            assert proc.returncode == 0 and "RUN_SUCCESS" in out, out[-3000:]
        retries += sum(out.count("commit conflict") for out in outputs)
    print(f"commit conflicts retried: {retries}")

    warehouse = Warehouse.from_settings()
    agrees_with_tables(warehouse)  # no lost write: each partition holds its latest logged version
    with warehouse.connect() as con:
        writes = dict(((a, p), n) for a, p, n in con.execute(
            "SELECT asset, partition, count(*) FROM provline.version_log WHERE partition <> '' GROUP BY ALL"
        ).fetchall())
        assert len(con.execute(LATEST).fetchall()) == 6 + 7 * 2
    daily = {a for a, _ in writes}
    assert len(daily) == 7
    assert all(writes[(a, DAY)] == 3 and writes[(a, other)] == 1 for a in daily)  # every write logged once


KILL = textwrap.dedent("""
    import os, random, signal, sys, threading
    import dagster as dg
    from pipelines.definitions import defs
    from pipelines.warehouse import ducklake

    def write_partitions(con, write):  # the partition deleted and rewritten, in the open transaction
        receipts = original(con, write)
        if write.table == "staging.flights":
            if sys.argv[1] == "before-commit":
                os.kill(os.getpid(), signal.SIGKILL)
            threading.Timer(random.uniform(0, 0.05), os.kill, (os.getpid(), signal.SIGKILL)).start()
        return receipts

    original = ducklake.write_partitions
    ducklake.write_partitions = write_partitions
    dg.materialize(list(defs.assets), selection=dg.AssetSelection.groups("flights"), partition_key=sys.argv[2],
                   resources=defs.resources)
""")



@pytest.mark.slow
@pytest.mark.parametrize("where", ["before-commit", "during-commit"])
def test_kill_9_during_a_lake_commit_leaves_no_partial_partition(lake: Lake, where: str, delivered):
    from tests.audit.conftest import DAY as CHANGED_DAY
    from tests.audit.conftest import _changed_sources

    assert materialize("reference").success
    assert materialize("flights", CHANGED_DAY).success
    warehouse = Warehouse.from_settings()
    with warehouse.connect() as con:
        before = con.execute("SELECT content_hash FROM provline.version_log WHERE asset = 'staging.flights'").fetchall()
    sources = _changed_sources(lake.data_path.parent / "sources", delivered)  # the killed run writes a new version
    env = {**os.environ, "PROVLINE_SOURCE_DIR": str(sources)}
    proc = subprocess.run([sys.executable, "-c", KILL, where, CHANGED_DAY], cwd=REPO, env=env, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    agrees_with_tables(warehouse)  # whole versions only: the old one, or (commit landed) the new one
    with warehouse.connect() as con:
        after = con.execute("SELECT content_hash FROM provline.version_log WHERE asset = 'staging.flights'").fetchall()
    assert after == before or (where == "during-commit" and after[:-1] == before and len(after) == 2)
