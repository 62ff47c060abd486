"""Bad source files through PROVLINE_SOURCE_DIR: clear errors (file, column, row), nothing written."""

from __future__ import annotations

import pandas as pd
import pytest

from checks.flights import RawAirlines, RawFlights
from pipelines.sources import SourceError, read_source, source_path

from .conftest import DAY, DAY_FLIGHTS, materialize, query, scalar, source

pytestmark = pytest.mark.filterwarnings("ignore")


def _failure_text(result) -> str:
    return "\n".join(
        str(event.event_specific_data.error.cause.message if event.event_specific_data.error.cause else "")
        + event.event_specific_data.error.message
        for event in result.all_events if event.event_type_value == "STEP_FAILURE"
    )


@pytest.mark.slow
def test_user_files_are_read_from_source_dir(source_dir, home):
    assert materialize("reference").success
    assert materialize("flights", DAY).success
    assert scalar(home, "SELECT count(*) FROM raw.flights") == DAY_FLIGHTS
    source = query(home, "SELECT input_versions FROM provline.version_log WHERE asset = 'raw.flights'")[0][0]
    assert "source:flights.csv" in source


def test_parquet_source(source_dir, home):
    pd.read_csv(source_dir / "airlines.csv").to_parquet(source_dir / "airlines.parquet")
    (source_dir / "airlines.csv").unlink()
    table = read_source(source("airlines"), RawAirlines)
    assert table.path.suffix == ".parquet" and len(table.frame) == 16
    assert materialize("reference").success
    assert scalar(home, "SELECT count(*) FROM staging.airlines") == 16


@pytest.mark.slow
def test_unparsable_value_names_file_column_and_line(source_dir, home):
    frame = pd.read_csv(source_dir / "flights.csv", dtype=str)
    frame.loc[frame.index[41], "distance"] = "far"
    frame.to_csv(source_dir / "flights.csv", index=False)
    with pytest.raises(SourceError) as error:
        read_source(source("flights"), RawFlights)
    message = str(error.value)
    assert "flights.csv" in message and "'distance'" in message and "line 43" in message and "'far'" in message
    assert materialize("reference").success
    result = materialize("flights", DAY)
    assert not result.success
    assert "line 43" in _failure_text(result)
    assert query(home, "SELECT * FROM information_schema.tables WHERE table_name = 'flights'") == []


def _latin1_flights(source_dir) -> None:
    """flights.csv with one tail number written in Latin-1 (not UTF-8) on line 43."""
    frame = pd.read_csv(source_dir / "flights.csv", dtype=str)
    frame.loc[frame.index[41], "tailnum"] = "N\u00e9123"
    frame.to_csv(source_dir / "flights.csv", index=False, encoding="latin-1")


def test_a_file_that_is_not_utf8_is_named_with_its_line_and_what_to_do(source_dir, home):
    _latin1_flights(source_dir)
    with pytest.raises(SourceError) as error:
        read_source(source("flights"), RawFlights)
    message = str(error.value)
    assert f"{source_dir / 'flights.csv'}: not UTF-8 at line 43, byte 43 of the line (b'\\xe9')" in message
    assert "iconv -f WINDOWS-1252 -t UTF-8 flights.csv" in message


@pytest.mark.slow
def test_a_file_that_is_not_utf8_fails_the_step_once(source_dir, home):
    """A decode error is deterministic: the step fails at once, never retried, saying where and what to do."""
    assert materialize("reference").success
    _latin1_flights(source_dir)
    result = materialize("flights", DAY)
    assert not result.success
    kinds = [e.event_type_value for e in result.all_events if e.step_key == "raw__flights"]
    assert kinds.count("STEP_FAILURE") == 1 and "STEP_UP_FOR_RETRY" not in kinds
    assert "flights.csv: not UTF-8 at line 43" in _failure_text(result)


def test_missing_column_and_missing_file(source_dir, home):
    pd.read_csv(source_dir / "flights.csv").drop(columns=["dest"]).to_csv(source_dir / "flights.csv", index=False)
    with pytest.raises(SourceError, match=r"flights.csv: missing column\(s\) dest"):
        read_source(source("flights"), RawFlights)
    (source_dir / "weather.csv").unlink()
    with pytest.raises(SourceError, match="no weather.csv or weather.parquet"):
        source_path(source("weather"))


@pytest.mark.slow
def test_bad_file_keeps_the_previous_version(source_dir, home):
    assert materialize("reference").success
    assert materialize("flights", DAY).success
    before = query(home, "SELECT content_hash FROM provline.version_log WHERE asset = 'raw.flights'")
    frame = pd.read_csv(source_dir / "flights.csv", dtype=str)
    frame.loc[frame.index[0], "sched_dep_time"] = "5:15"
    frame.to_csv(source_dir / "flights.csv", index=False)
    assert not materialize("flights", DAY).success
    assert scalar(home, "SELECT count(*) FROM raw.flights") == DAY_FLIGHTS
    assert query(home, "SELECT content_hash FROM provline.version_log WHERE asset = 'raw.flights'") == before


def test_a_parsed_source_is_kept_for_the_next_process_and_never_outlives_its_file(source_dir, home):
    from pipelines.sources import _read

    first = read_source(source("flights"), RawFlights)
    (copy,) = (home / "cache" / "sources").glob("flights.csv.*.parquet")
    assert first.content_hash in copy.name
    marked = first.frame.assign(distance=first.frame["distance"] + 1)  # to tell the copy from a parse
    marked.to_parquet(copy, index=False)
    _read.cache_clear()  # as a new process
    again = read_source(source("flights"), RawFlights)
    assert again.frame.equals(marked) and list(again.frame.dtypes) == list(first.frame.dtypes)
    assert again.content_hash == first.content_hash

    changed = pd.read_csv(source_dir / "flights.csv")
    changed.loc[0, "distance"] = 7
    changed.to_csv(source_dir / "flights.csv", index=False)
    _read.cache_clear()
    parsed = read_source(source("flights"), RawFlights)
    assert parsed.frame["distance"].iloc[0] == 7 and parsed.content_hash != first.content_hash
    (copy,) = (home / "cache" / "sources").glob("flights.csv.*.parquet")  # the old copy is gone
    assert parsed.content_hash in copy.name


def test_partition_keys_read_only_the_columns_the_expression_names_quoted_or_not():
    from pipelines.sources import partition_keys

    frame = pd.DataFrame({"flown on": ["2013-01-02", "not a date", None], "y": [2013, 2013, 2013],
                          "note": ["a", "b", "c"]})
    assert list(partition_keys(frame, 'CAST("flown on" AS DATE)')) == ["2013-01-02", None, None]
    assert list(partition_keys(frame, "make_date(y, 1, 5)")) == ["2013-01-05"] * 3
