"""Atomicity: a failure (exception or kill -9) inside the write leaves the previous version."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from pipelines.warehouse import base

from .conftest import DAY, DAY_FLIGHTS, REPO, materialize, query, scalar

pytestmark = pytest.mark.filterwarnings("ignore")


def _state(home):
    return (
        scalar(home, "SELECT count(*) FROM staging.flights"),
        query(home, "SELECT content_hash FROM provline.version_log WHERE asset = 'staging.flights'"),
    )


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
