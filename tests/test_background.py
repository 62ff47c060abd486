"""The one background worker (pipelines/background.py) and the shared locks (pipelines/locks.py), on real
threads, processes and files."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

from pipelines import background
from pipelines.background import Worker
from pipelines.locks import LockTimeout, file_lock, open_duckdb, try_lock


def test_a_worker_runs_again_when_kicked_during_a_round_and_retries_when_work_asks():
    rounds: list[float] = []
    kicked_inside = threading.Event()

    def work(stopping: threading.Event) -> float | None:
        rounds.append(time.monotonic())
        if len(rounds) == 1:
            worker.kick()  # new work arrived during the round
            kicked_inside.set()
        return 0.2 if len(rounds) == 2 else None  # the second round has a retry due in 0.2 s

    worker = Worker("test-worker", work, failed=lambda error: None)
    worker.kick()
    assert worker.wait_idle(10)
    assert kicked_inside.is_set() and len(rounds) == 3
    assert rounds[2] - rounds[1] >= 0.2


def test_a_failed_round_is_reported_and_the_next_kick_runs_again():
    errors: list[Exception] = []
    calls = []

    def work(stopping: threading.Event) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("store locked (injected)")

    worker = Worker("test-worker", work, failed=errors.append)
    worker.kick()
    assert worker.wait_idle(10)
    assert [str(e) for e in errors] == ["store locked (injected)"]
    worker.kick()
    assert worker.wait_idle(10) and len(calls) == 2


def test_stop_waits_a_bounded_time_and_starts_nothing_new():
    release = threading.Event()

    def work(stopping: threading.Event) -> None:
        release.wait(30)  # an attempt that hangs

    worker = Worker("test-worker", work, failed=lambda error: None)
    worker.kick()
    started = time.monotonic()
    worker.stop(0.3)
    assert 0.25 <= time.monotonic() - started < 5
    assert worker.stopping.is_set()
    release.set()
    assert worker.wait_idle(10)
    worker.kick()  # stopped: no new thread
    assert worker._thread is None


def _exit_hook_child(marker: str) -> None:
    background.at_exit(lambda: Path(marker).write_text("ran"))


def test_exit_hooks_run_when_a_multiprocessing_child_ends(tmp_path: Path):
    """Dagster's step processes end with os._exit: the hooks must run there too (threading's exit hook)."""
    marker = tmp_path / "hook"
    child = multiprocessing.get_context("fork").Process(target=_exit_hook_child, args=(str(marker),))
    child.start()
    child.join(60)
    assert child.exitcode == 0 and marker.read_text() == "ran"


def test_a_forked_child_starts_with_an_idle_worker():
    release = threading.Event()
    worker = Worker("test-worker", lambda stopping: release.wait(30) and None, failed=lambda error: None)
    worker.kick()  # busy in the parent when it forks
    pid = os.fork()
    if pid == 0:  # the child: no thread, a free lock, and a kick works
        ok = worker._thread is None and not worker.stopping.is_set()
        done = threading.Event()
        worker.work = lambda stopping: done.set()
        worker.kick()
        os._exit(0 if ok and done.wait(10) else 1)
    _, status = os.waitpid(pid, 0)
    release.set()
    assert os.waitstatus_to_exitcode(status) == 0
    assert worker.wait_idle(10)


def test_file_lock_waits_then_raises_the_callers_error(tmp_path: Path):
    lock = tmp_path / "sub" / "x.lock"
    with file_lock(lock, 1):
        started = time.monotonic()
        with pytest.raises(LockTimeout, match=f"waited 0s for the lock {lock}; another process holds it"):
            with file_lock(lock, 0.2):  # another open file: flock conflicts even within a process
                pass
        assert time.monotonic() - started >= 0.2
        with pytest.raises(KeyError):
            with file_lock(lock, 0, KeyError("mine")):
                pass
    with file_lock(lock, 0):  # released
        pass


def test_try_lock_says_whether_it_holds_the_lock(tmp_path: Path):
    lock = tmp_path / "queue" / ".lock"
    with try_lock(lock) as first:
        with try_lock(lock) as second:
            assert (first, second) == (True, False)
    with try_lock(lock) as again:
        assert again


def test_open_duckdb_waits_for_another_process_holding_the_file(tmp_path: Path):
    path = tmp_path / "db.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); "
         "print('held', flush=True); time.sleep(float(sys.argv[2]))", str(path), "1.5"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(duckdb.IOException, match="lock"):
            with open_duckdb(str(path)):
                pass
        started = time.monotonic()
        with open_duckdb(str(path), "CREATE TABLE t AS SELECT 42 AS x", wait_s=30) as con:
            assert time.monotonic() - started > 0.3  # it waited for the holder to exit
            assert con.execute("SELECT x FROM t").fetchall() == [(42,)]
    finally:
        holder.kill()
        holder.wait()
