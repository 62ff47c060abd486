"""Files several processes share: flock locks, and a DuckDB database opened under one.

DuckDB lets one process at a time open a database file; runs, steps, sensors and commands are separate
processes. The warehouse file, the alert store and the lineage store therefore open their database the same
way (`open_duckdb`): under a lock, setting it up (time zone, tables) before anyone uses the connection.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

POLL_S = 0.05


class LockTimeout(RuntimeError):
    """Another process held a lock longer than the caller would wait."""


@contextmanager
def file_lock(path: Path, timeout_s: float, timeout_error: Exception | None = None) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created with its folder), waiting at most `timeout_s` for it; then
    raise `timeout_error` (default: a LockTimeout naming the file). The wait polls, so Ctrl-C and a run's
    cancel end it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise timeout_error or LockTimeout(
                        f"waited {timeout_s:.0f}s for the lock {path}; another process holds it") from None
                time.sleep(POLL_S)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def try_lock(path: Path) -> Iterator[bool]:
    """Take the flock on `path` if it is free, without waiting; yields whether it is held (one worker at a
    time across processes: the others leave the work to it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def open_duckdb(database: str, *setup: str, config: dict | None = None,
                wait_s: float = 0.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to `database` that first runs the `setup` statements, closed at exit. While another
    process holds the file (DuckDB's own lock, met when opening or attaching it), it tries again for up to
    `wait_s`. (A caller that holds a `file_lock` for the file never meets DuckDB's.)"""
    deadline = time.monotonic() + wait_s
    while True:
        con = None
        try:
            con = duckdb.connect(database, config=config or {})
            for statement in setup:
                con.execute(statement)
            break
        except BaseException as error:
            if con is not None:
                con.close()
            held = isinstance(error, duckdb.IOException) and "lock" in str(error).lower()
            if not held or time.monotonic() > deadline:
                raise
            time.sleep(POLL_S)
    try:
        yield con
    finally:
        con.close()
