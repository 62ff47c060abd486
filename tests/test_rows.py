"""A step's rows in the scratch database (pipelines/rows.py): loaded, taken out, streamed, dropped, and held to the
memory limit by spilling."""

from __future__ import annotations

import gc

import duckdb
import numpy as np
import pandas as pd
import pyarrow
import pytest

from pipelines import sql
from pipelines.rows import Rows
from pipelines.sql import PARTITION, scratch


@pytest.fixture
def small_scratch(tmp_path, monkeypatch):
    """A scratch database of this process held to 64MB, spilling under a PROVLINE_HOME of its own."""
    (tmp_path / "home").mkdir()
    monkeypatch.setattr(sql, "_scratch_database", None)  # (the process's own comes back after the test)
    monkeypatch.setattr(sql, "_scratch_config", None)
    sql.configure_scratch("64MB", tmp_path / "home" / "spill")  # as a step does, from its settings
    yield tmp_path / "home" / "spill"


def _tables() -> set[str]:
    with scratch() as con:
        return {name for (name,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}


def test_rows_load_count_and_come_out_in_their_order():
    frame = pd.DataFrame({"v": [3, 1, 2, 5], PARTITION: ["b", "a", "b", "a"]})
    rows = Rows.load(frame)
    assert rows.num_rows == 4 and rows.column_names == ["v", PARTITION]
    assert rows.counts() == {"a": 2, "b": 2}
    assert rows.to_arrow().column("v").to_pylist() == [3, 1, 2, 5]
    taken = rows.take_out(np.array([2, 0]))
    assert taken.column("v").to_pylist() == [3, 2]  # in row order
    assert rows.to_arrow().column("v").to_pylist() == [1, 5] and rows.counts() == {"a": 2}


def test_rows_stream_into_another_database_batch_by_batch(tmp_path):
    rows = Rows.load(pyarrow.table({"v": np.arange(300_000), PARTITION: np.where(np.arange(300_000) % 2, "a", "b")}))
    with duckdb.connect(str(tmp_path / "other.duckdb")) as other:
        stream = rows.stream(f"{PARTITION} = $p", {"p": "a"})
        assert isinstance(stream, pyarrow.RecordBatchReader)
        other.register("incoming", stream)
        other.execute("CREATE TABLE t AS SELECT v FROM incoming")
        assert other.execute("SELECT count(*), sum(v) FROM t").fetchone() == (150_000, sum(range(1, 300_000, 2)))


def test_a_table_is_dropped_when_its_rows_are_let_go():
    rows = Rows.load(pd.DataFrame({"v": [1]}))
    name = rows.name.strip('"')
    assert name in _tables()
    del rows
    gc.collect()
    assert name not in _tables()


def test_rows_bigger_than_the_memory_limit_spill_and_stay_exact(small_scratch):
    """200MB of text under a 64MB limit: DuckDB spills to PROVLINE_HOME/spill, and nothing is lost."""
    count = 2_000_000
    source = duckdb.connect().execute(
        "SELECT i, md5(i::VARCHAR) || md5((i + 1)::VARCHAR) AS text, (i % 7)::VARCHAR AS _partition "
        "FROM range($n) t(i)", {"n": count}).to_arrow_reader(100_000)
    rows = Rows.load(source)
    with scratch() as con:
        assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0] in ("61.0 MiB", "64.0 MB")
    assert rows.num_rows == count
    assert sum(rows.counts().values()) == count
    assert rows.query("SELECT count(DISTINCT text), sum(i) FROM {rows}") == [(count, count * (count - 1) // 2)]
    assert small_scratch.is_dir()  # where it spilled
