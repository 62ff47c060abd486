"""The landing zone: seeded daily files, the sensor through Dagster's sensor machinery, real runs reading
a day from its landing file, and the faults (a growing file, a day outside the partitions, duplicates under
other names, an unexpected column, a value that does not parse)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

import assets.flights as flights
from pipelines.definitions import defs
from pipelines.factory import resources
from pipelines.monitor import alerts
from tests.conftest import REPO, _isolate, materialize, query

from .conftest import Webhook, eventually

pytestmark = pytest.mark.slow  # the landing sensor's runs wait for files to settle
SENSOR = flights.flights_landing_sensor
SEEDED = ["2013-01-14", "2013-01-15"]


@dataclass
class Landing:
    home: Path
    folder: Path
    webhook: Webhook
    instance: dg.DagsterInstance

    def tick(self, cursor: str | None = None):
        """One evaluation of the sensor, as the daemon does it."""
        return SENSOR.evaluate_tick(dg.build_sensor_context(cursor=cursor, instance=self.instance, definitions=defs,
                                                            resources=resources()))

    def settle(self, cursor: str | None = None):
        """Two ticks: the first sees the files, the second (nothing changed since) acts on them."""
        return self.tick(self.tick(cursor).cursor)


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Landing]:
    base = tmp_path_factory.mktemp("landing")
    webhook = Webhook()
    threading.Thread(target=webhook.serve_forever, daemon=True).start()
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, base / "provline")
        mp.setenv("PROVLINE_LANDING_DIR", str(base / "landing"))
        mp.setenv("PROVLINE_LANDING_SETTLE_S", "0")
        mp.setenv("PROVLINE_ALERT_WEBHOOK_URL", webhook.url)
        seeded = subprocess.run([sys.executable, "-m", "pipelines.cli", "landing", "seed", "--start", SEEDED[0],
                                 "--end", SEEDED[-1]], cwd=REPO, env=os.environ.copy(), capture_output=True, text=True)
        assert seeded.returncode == 0, seeded.stderr[-3000:]
        assert seeded.stdout.strip() == f"4 landing file(s) for {SEEDED[0]}..{SEEDED[-1]} in {base / 'landing'}"
        assert materialize("reference").success
        yield Landing(base / "provline", base / "landing", webhook, dg.DagsterInstance.ephemeral())
        assert alerts.sender.wait_idle(30)
    webhook.shutdown()
    webhook.server_close()


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_seed_writes_each_day_of_each_source_table(landing: Landing):
    flights_15 = pd.read_csv(landing.folder / "flights" / "2013-01-15.csv")
    assert len(flights_15) == 894 and set(flights_15["day"]) == {15} and set(flights_15["month"]) == {1}
    weather_14 = pd.read_csv(landing.folder / "weather" / "2013-01-14.csv")
    assert len(weather_14) == 72 and list(weather_14.columns)[:4] == ["origin", "year", "month", "day"]
    assert sorted(p.name for p in landing.folder.rglob("*") if p.is_file()) == \
        sorted(f"{d}.csv" for d in SEEDED for _ in ("flights", "weather"))


def test_the_sensor_runs_each_day_once_its_files_have_settled(landing: Landing):
    first = landing.tick()
    assert first.run_requests == [] and "still changing" in first.skip_message
    second = landing.tick(first.cursor)
    requests = {r.partition_key: r for r in second.run_requests}
    assert sorted(requests) == SEEDED
    versions = {name: md5(landing.folder / name / "2013-01-15.csv") for name in ("flights", "weather")}
    request = requests["2013-01-15"]
    assert request.tags["provline/landing"] == f"flights={versions['flights']},weather={versions['weather']}"
    assert request.run_key.startswith("2013-01-15:")
    third = landing.tick(second.cursor)  # the same files never run twice
    assert third.run_requests == []
    # the request, run for real: the day is read from its landing files
    result = defs.get_job_def("flights_daily").execute_in_process(
        partition_key=request.partition_key, tags=request.tags, instance=landing.instance,
        resources=resources(), raise_on_error=False)
    assert result.success
    assert query(landing.home, "SELECT count(*) FROM marts.flight_facts") == [(894,)]
    (inputs,) = query(landing.home, "SELECT input_versions FROM provline.version_log WHERE asset = 'raw.flights'")
    assert json.loads(inputs[0]) == {"source:2013-01-15.csv": versions["flights"]}
    # a changed file runs again, under a new run key
    weather = landing.folder / "weather" / "2013-01-15.csv"
    frame = pd.read_csv(weather, dtype=str, keep_default_na=False)
    frame.loc[0, "temp"] = "39.2"
    frame.to_csv(weather, index=False)
    again = landing.settle(third.cursor)
    assert [r.partition_key for r in again.run_requests] == ["2013-01-15"]
    assert again.run_requests[0].run_key != request.run_key


def test_a_day_without_its_landing_file_fails_naming_the_path(landing: Landing):
    result = materialize("flights", "2013-01-20")
    assert not result.success
    failures = [e.event_specific_data.error.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    expected = landing.folder / "flights" / "2013-01-20"
    assert any(f"no landing file for 2013-01-20: expected {expected}.csv or .parquet" in m for m in failures)


def test_a_file_still_being_written_is_left_alone_until_it_settles(landing: Landing):
    complete = (landing.folder / "flights" / "2013-01-15.csv").read_bytes().replace(b",1,15,", b",1,16,")
    complete = complete.replace(b"2013-01-15T", b"2013-01-16T")
    weather = pd.read_csv(landing.folder / "weather" / "2013-01-15.csv", dtype=str, keep_default_na=False)
    weather.assign(day="16", time_hour=weather["time_hour"].str.replace("2013-01-15T", "2013-01-16T")).to_csv(
        landing.folder / "weather" / "2013-01-16.csv", index=False)
    growing = landing.folder / "flights" / "2013-01-16.csv"
    cursor = landing.settle().cursor
    for end in (len(complete) // 3, 2 * len(complete) // 3 + 7, len(complete)):  # cut mid-line, twice
        growing.write_bytes(complete[:end])
        tick = landing.tick(cursor)
        cursor = tick.cursor
        assert tick.run_requests == [] and "flights/2013-01-16.csv is still changing" in tick.skip_message
        assert growing.exists() and not (landing.folder / "rejected" / "flights" / growing.name).exists()
    done = landing.tick(cursor)  # unchanged since the last tick: settled
    assert [r.partition_key for r in done.run_requests] == ["2013-01-16"]


def _copy_of(landing: Landing, source: str, day: str) -> pd.DataFrame:
    return pd.read_csv(landing.folder / source / f"{day}.csv", dtype=str, keep_default_na=False)


FAULTS = {
    "a day outside the partitions": (
        "flights", "2014-01-05.csv", lambda f: f,
        "2014-01-05 is outside the daily partitions of raw.flights (2013-01-01..2013-12-31)"),
    "a copy under a name that is no day": (
        "flights", "2013-01-15 (1).csv", lambda f: f,
        "not a daily landing file name: expected <YYYY-MM-DD>.csv or .parquet, got '2013-01-15 (1).csv'"),
    "a copy of another day under this day's name": (
        "flights", "2013-01-17.csv", lambda f: f,
        "894 of 894 row(s) are not dated 2013-01-17 (first: line 2, dated 2013-01-15)"),
    "a second file for a day that has one": (
        "flights", "2013-01-15.parquet", lambda f: f,
        "2013-01-15.csv already holds 2013-01-15: a second file for the same day is not loaded"),
    "an unexpected column": (
        "weather", "2013-01-18.csv", lambda f: f.assign(day="18", sensor_id="A7"),
        "unexpected column(s) sensor_id, not in the contract RawWeather"),
    "a value that does not parse": (
        "flights", "2013-01-19.csv", lambda f: f.assign(day="19").assign(dep_delay=["12", "n/a", *f["dep_delay"][2:]]),
        "column 'dep_delay', line 3: 'n/a' is not a valid number"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_file_that_cannot_be_loaded_is_rejected_with_its_reason_and_an_alert(landing: Landing, fault: str):
    source, name, change, reason = FAULTS[fault]
    frame = change(_copy_of(landing, source, "2013-01-15"))
    path = landing.folder / source / name
    if name.endswith(".parquet"):
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    tick = landing.settle()
    rejected = landing.folder / "rejected" / source / name
    assert not path.exists() and rejected.exists()  # moved, nothing lost
    present = [{p.stem for p in (landing.folder / s).glob("2013-*")} for s in ("flights", "weather")]
    assert {r.partition_key for r in tick.run_requests} == set.intersection(*present)  # only what is left runs
    assert reason in rejected.with_name(name + ".reason").read_text()
    sent = eventually(lambda: [m["text"] for m in landing.webhook.received if reason in m["text"]],
                      what="the rejection alert")
    assert sent[0].startswith(f"[provline] Landing file rejected: landing/{source} [")
