"""Many writers on one DuckLake, no lock: optimistic commits, whole transactions retried on conflict."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from pipelines.rows import Rows
from pipelines.sql import PARTITION, arrow_table
from pipelines.warehouse import CommitConflict, Warehouse, Write, ducklake
from tests.conftest import DAY, DAY_FLIGHTS, REPO, materialize

from .conftest import Lake
from .test_ducklake import LATEST, agrees_with_tables

pytestmark = pytest.mark.filterwarnings("ignore")


def write(day: str, value: int, run_id: str) -> Write:
    """3 rows of `value` on `day`, one more quarantined, its failure case and a check result."""
    rows = pd.DataFrame({"day": pd.to_datetime([day] * 3), "v": [value] * 3, PARTITION: day})
    quarantined = rows.head(1).assign(v=-value, _quarantine_reasons="v_ge (t.csv line 5)")
    failures = pd.DataFrame({"check_name": ["v_ge"], "severity": ["warn"], "column": ["v"],
                             "failing_value": [str(-value)], "row_key": ["t.csv line 5"], PARTITION: [day]})
    results = [{"check_name": "v_ge", "severity": "warn", "passed": False, "blocking": False, "failing_rows": 1,
                "message": None}]
    return Write(table="raw.t", partition_expr="day", columns={"day": "DATE", "v": "BIGINT"}, code_version="c",
                 run_id=run_id, partitions=[day], rows=Rows.load(rows), quarantined=arrow_table(quarantined),
                 failures=failures, check_results={day: results})


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


class BeforeCommit:
    """Holds each writer just before its COMMIT (its rows deleted and written in its open transaction) until every
    other writer is held there too, waits for a lock in the catalog database (pg_locks) or is done: without a
    serializing lock both commit at once; with one, the first commits while the other waits."""

    def __init__(self, lake: Lake, writers: list[str]):
        self.lake, self.state = lake, dict.fromkeys(writers, "writing")
        self.changed = threading.Condition()

    def write_partitions(self, original):
        def held(con, w):
            receipts = original(con, w)
            self.arrive(w.run_id)
            return receipts
        return held

    def arrive(self, writer: str) -> None:
        with self.changed:
            self.state[writer] = "before commit"
            self.changed.notify_all()
        with psycopg.connect(self.lake.conninfo, autocommit=True) as watch:
            deadline = time.monotonic() + 300  # (a hang guard: fails the test instead of blocking it)
            while True:
                waiting = watch.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()[0]
                with self.changed:
                    others = [s for w, s in self.state.items() if w != writer]
                    if all(s in ("before commit", "done") for s in others) or waiting >= len(others):
                        self.state[writer] = "committing"
                        return
                    assert time.monotonic() < deadline, f"writers stuck: {self.state}"
                    self.changed.wait(0.05)

    def done(self, writer: str) -> None:
        with self.changed:
            self.state[writer] = "done"
            self.changed.notify_all()


DAY1 = "2013-01-01"


def another_host(lake: Lake, name: str) -> Warehouse:
    """A warehouse on the same lake through a DuckDB instance of its own (as another machine has)."""
    return Warehouse.from_settings().model_copy(update={"name": name})


@pytest.mark.slow
@pytest.mark.parametrize("partition", ["new", "existing"])
def test_two_hosts_replacing_one_partition_at_once_are_serialized(lake: Lake, monkeypatch, partition: str):
    """The race of issue 20: both writers delete the day (nothing, when it is new), insert it, and reach COMMIT
    together. Exactly one copy survives — the later writer's — with its quarantined row, failure case and one
    version-log row per writer."""
    Warehouse.from_settings().commit(write("2013-01-02", 2, "run-other-day"))  # the tables exist
    if partition == "existing":
        Warehouse.from_settings().commit(write(DAY1, 1, "run-0"))
    barrier = BeforeCommit(lake, ["run-a", "run-b"])
    monkeypatch.setattr(ducklake, "write_partitions", barrier.write_partitions(ducklake.write_partitions))
    errors = []

    def writer(run: str, value: int) -> None:
        try:
            another_host(lake, f"host_{run[-1]}").commit(write(DAY1, value, run))
        except BaseException as error:  # noqa: BLE001 - reported by the test
            errors.append(error)
        finally:
            barrier.done(run)

    threads = [threading.Thread(target=writer, args=(run, value)) for run, value in (("run-a", 10), ("run-b", 20))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    warehouse = Warehouse.from_settings()
    with warehouse.connect() as con:
        def day1(sql: str) -> list[tuple]:
            return con.execute(sql, {"day": DAY1}).fetchall()

        log = day1("SELECT run_id FROM provline.version_log WHERE partition = $day ORDER BY snapshot_id")
        rows = day1("SELECT v, count(*) FROM raw.t WHERE day = $day GROUP BY v")
        quarantined = day1("SELECT v, _run_id FROM quarantine.raw_t WHERE day = $day")
        failures = day1("SELECT failing_value, run_id FROM quality.failures WHERE partition = $day")
        results = day1("SELECT run_id, count(*) FROM quality.check_results WHERE partition = $day "
                       "GROUP BY ALL ORDER BY ALL")
    earlier = [("run-0",)] if partition == "existing" else []
    assert sorted(log[len(earlier):]) == [("run-a",), ("run-b",)] and log[:len(earlier)] == earlier
    later = log[-1][0]
    value = {"run-a": 10, "run-b": 20}[later]
    assert rows == [(value, 3)]  # the later writer's rows, once
    assert quarantined == [(-value, later)]
    assert failures == [(str(-value), later)]
    assert results == [(run, 1) for run in sorted({"run-a", "run-b"} | {r for (r,) in earlier})]
    agrees = warehouse.content_hashes
    with warehouse.connect() as con:
        (current,) = agrees(con, "raw.t", [DAY1], "day").values()
        assert con.execute("SELECT content_hash FROM provline.version_log WHERE run_id = $run",
                           {"run": later}).fetchone()[0] == current


def host(home: Path, lake: Lake, day: str) -> subprocess.Popen:
    """Another machine: its own PROVLINE_HOME and Dagster instance; only the catalog and data path shared."""
    env = {**os.environ, **lake.env(), "PROVLINE_HOME": str(home)}
    env.pop("DAGSTER_HOME", None)
    return subprocess.Popen(
        [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "pipelines.definitions",
         "--select", "group:flights", "--partition", day],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_two_hosts_write_the_same_new_day_and_different_days_at_once(lake: Lake, tmp_path: Path):
    """Two `dagster asset materialize` processes with their own homes, sharing only the catalog and the data path:
    first both write a day neither wrote before (the race of issue 20), then one rewrites it while the other
    writes a new one. Each write is logged once and every partition holds exactly its latest version."""
    assert materialize("reference").success  # (also creates the catalog once, before the hosts race)
    other = "2013-01-16"
    rounds = [((tmp_path / "a", DAY), (tmp_path / "b", DAY)), ((tmp_path / "a", DAY), (tmp_path / "b", other))]
    for pair in rounds:
        procs = [host(home, lake, day) for home, day in pair]
        outputs = [p.communicate(timeout=600)[0] for p in procs]
        for proc, out in zip(procs, outputs, strict=True):
            assert proc.returncode == 0 and "RUN_SUCCESS" in out, out[-3000:]

    warehouse = Warehouse.from_settings()
    agrees_with_tables(warehouse)  # no lost or doubled write: each partition holds its latest logged version
    with warehouse.connect() as con:
        writes = dict(((a, p), n) for a, p, n in con.execute(
            "SELECT asset, partition, count(*) FROM provline.version_log WHERE partition <> '' GROUP BY ALL"
        ).fetchall())
        assert len(con.execute(LATEST).fetchall()) == 6 + 7 * 2
        assert con.execute("SELECT count(*) FROM raw.flights WHERE year = 2013 AND month = 1 AND day = 15"
                           ).fetchone()[0] == DAY_FLIGHTS
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


@pytest.mark.slow
def test_ctrl_c_while_waiting_for_a_partition_held_by_another_host_ends_the_run_at_once(lake: Lake, home: Path):
    """The wait for another host's partition lock is interrupted like any step: exit 130, ABORT, nothing written."""
    from pipelines.warehouse.ducklake import lock_key
    from tests.test_run_lifecycle import BIN, QUICKLY_S, _ended_within, _states

    assert materialize("reference").success
    with psycopg.connect(lake.conninfo, autocommit=True) as other_host:
        other_host.execute("SELECT pg_advisory_lock(%s)", [lock_key("raw.flights", DAY)])
        process = subprocess.Popen(
            [str(BIN / "dagster"), "asset", "materialize", "-m", "pipelines.definitions", "--select", "raw/flights",
             "--partition", DAY], cwd=REPO, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True)
        try:
            deadline = time.monotonic() + 300  # (a hang guard)
            while not other_host.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()[0]:
                assert process.poll() is None, process.communicate()[0][-3000:]
                assert time.monotonic() < deadline, "the run never waited for the partition"
                time.sleep(0.2)
            os.killpg(process.pid, signal.SIGINT)
            code, out, _ = _ended_within(process, QUICKLY_S)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    assert code == 130, out[-3000:]
    assert _states(home)["raw.flights"] == ["START", "ABORT"]
    with Warehouse.from_settings().connect() as con:
        assert con.execute("SELECT count(*) FROM provline.version_log WHERE asset = 'raw.flights'").fetchone() == (0,)
