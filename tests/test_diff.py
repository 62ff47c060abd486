"""`provline diff` on a real warehouse (the reference tables and two days of flights, built by Dagster runs): each
test changes the code of a copy of the flights domain (a spec replaced, passed to the Python API, or put in the
catalog for the CLI) and checks the measured counts against bare SQL over the recorded data."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pandera.pandas as pa
import pytest
from pandera.typing import Series

from checks.flights import NYC_ORIGINS, Contract, RouteDaily, StagingWeather
from pipelines.cli import main
from pipelines.definitions import catalog
from pipelines.diff import ADDITIVE, BREAKING, CANNOT, CHANGED, IDENTICAL, UNCHANGED, DiffReport, diff
from pipelines.warehouse import Warehouse

from .conftest import REPO, _isolate, materialize, query, scalar

DAY, DAY2 = "2013-01-15", "2013-01-16"
DAYS = [DAY, DAY2]
ROUTES = "marts.route_daily"
KEPT = "NOT cancelled AND distance >= 500"  # a tighter filter for the routes mart


@pytest.fixture(scope="module")
def two_days(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference tables, then DAY and DAY2 in one range run."""
    home = tmp_path_factory.mktemp("diff") / "provline"
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, home)
        assert materialize("reference").success
        assert materialize("flights", tags={"dagster/asset_partition_range_start": DAY,
                                            "dagster/asset_partition_range_end": DAY2}).success
    return home


@pytest.fixture
def home(two_days: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PROVLINE_HOME pointed at the shared warehouse: diffs only read it (test_nothing_is_written checks that)."""
    _isolate(monkeypatch, two_days)
    return two_days


def changed(table: str, **fields) -> dict:
    """Every spec, with `table`'s replaced as after an edit of its code (`sql=`, `transform=`, `contract=`)."""
    return {**catalog.specs, table: dataclasses.replace(catalog[table], **fields)}


def run_diff(tables: dict, *assets: str, days=DAYS, downstream: bool = False) -> DiffReport:
    return diff(list(assets), days, tables=tables, warehouse=Warehouse.from_settings(), downstream=downstream)


def fingerprint(home: Path) -> dict[str, tuple[int, int]]:
    """Every file under PROVLINE_HOME, its size and modification time."""
    return {str(p.relative_to(home)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(home.rglob("*"))
            if p.is_file()}


def route_sql(condition: str) -> str:
    return catalog[ROUTES].sql.replace("GROUP BY", f"AND {condition}\nGROUP BY")


def test_no_change_is_identical_by_the_hash_fast_path(home: Path):
    report = run_diff(catalog.specs, "marts.flight_facts", ROUTES, "staging.weather")
    assert report.verdict == IDENTICAL and report.exit_code("any") == 0
    # in dependency order; the mart reads the re-derived flight_facts, the others their recorded inputs
    inputs = {"staging.weather": {"unchanged"}, "marts.flight_facts": {"unchanged", "re-derived (new upstream)"},
              ROUTES: {"re-derived (new upstream)"}}
    assert [asset.asset for asset in report.assets] == list(inputs)
    for asset in report.assets:
        assert asset.verdict == IDENTICAL and asset.complete and asset.downstream == []
        for part in asset.partitions:
            assert part.status == UNCHANGED and part.new_hash == part.old_hash
            assert part.steps == ["re-derived", "hash", "contract"]  # no row was read or compared
            assert part.rows is None and part.columns == [] and part.examples == [] and part.rules == []
            assert {i["status"] for i in part.inputs} == inputs[asset.asset]
    recorded = scalar(home, "SELECT content_hash FROM provline.version_log WHERE asset = ? AND partition = ?",
                      [ROUTES, DAY])
    assert report.assets[2].partitions[0].old_hash == recorded


def test_a_tightened_filter_in_a_sql_mart_removes_exactly_the_rows_bare_sql_counts(home: Path):
    report = run_diff(changed(ROUTES, sql=route_sql(KEPT)), ROUTES)
    (asset,) = report.assets
    assert asset.verdict == CHANGED and report.verdict == CHANGED
    for part in asset.partitions:
        day = [part.partition]
        routes = scalar(home, "SELECT count(*) FROM marts.route_daily WHERE flight_date = ?", day)
        # a route's row goes when none of its flights is kept; it changes when only some are
        gone, some, carriers = query(home, f"""
            SELECT count(*) FILTER (WHERE kept = 0), count(*) FILTER (WHERE kept BETWEEN 1 AND total - 1),
                   count(*) FILTER (WHERE kept > 0 AND kept_carriers <> all_carriers)
            FROM (SELECT count(*) FILTER (WHERE {KEPT}) AS kept, count(*) AS total,
                         count(DISTINCT carrier) FILTER (WHERE {KEPT}) AS kept_carriers,
                         count(DISTINCT carrier) AS all_carriers
                  FROM marts.flight_facts WHERE flight_date = ? GROUP BY origin, dest)""", day)[0]
        assert gone > 0 and some > 0
        assert part.rows == {"old": routes, "new": routes - gone, "added": 0, "removed": gone, "changed": some,
                             "unchanged": routes - gone - some, "matched": routes - gone,
                             "matched_on": ["flight_date", "origin", "dest"], "note": None, "key_changed": None}
        assert part.schema == {"added": [], "removed": [], "retyped": [], "reordered": False}
        assert part.why == ["rows removed", "values changed"]
        columns = {c.column: c.changed for c in part.columns}
        assert columns["flights"] == columns["cancelled"] == some  # the cancelled flights no longer count
        assert columns.get("carriers", 0) == carriers
        assert columns.get("mean_arr_delay", 0) == 0 and "distance" not in columns  # (a cancelled flight: no delay)
        removed = [e for e in part.examples if e["kind"] == "removed"]
        assert len(removed) == 3 and all(e["after"] is None and set(e["key"]) == {"flight_date", "origin", "dest"}
                                         and int(e["before"]["flights"]) > 0 for e in removed)
    assert asset.summary()["rows"]["removed"] == sum(p.rows["removed"] for p in asset.partitions)


def test_without_a_key_rows_compare_as_a_multiset_and_it_says_so(home: Path):
    report = run_diff(changed(ROUTES, sql=route_sql(KEPT), key_columns=()), ROUTES, days=[DAY])
    (part,) = report.assets[0].partitions
    routes = scalar(home, "SELECT count(*) FROM marts.route_daily WHERE flight_date = ?", [DAY])
    gone, some = query(home, f"""SELECT count(*) FILTER (WHERE kept = 0), count(*) FILTER (WHERE kept BETWEEN 1
                                                                                   AND total - 1)
                                 FROM (SELECT count(*) FILTER (WHERE {KEPT}) AS kept, count(*) AS total
                                       FROM marts.flight_facts WHERE flight_date = ? GROUP BY origin, dest)""",
                       [DAY])[0]
    # a changed row is one removed and one added: nothing tells them apart without a key
    assert {k: part.rows[k] for k in ("old", "new", "added", "removed", "changed", "unchanged", "matched_on")} == \
        {"old": routes, "new": routes - gone, "added": some, "removed": gone + some, "changed": None,
         "unchanged": routes - gone - some, "matched_on": None}
    assert part.rows["note"].startswith("the table declares no key: compared as a multiset of rows")
    assert part.verdict == CHANGED and part.why == ["rows added", "rows removed"]
    assert {e["kind"] for e in part.examples} == {"added", "removed"}


class RouteDailyWithLongest(RouteDaily):
    """Origin x destination x day, with the longest flight's distance."""

    longest: Series[pd.Int64Dtype] = pa.Field(gt=0, description="Longest flight of the route that day, miles.")


def test_a_column_added_is_additive(home: Path):
    longest = "max(distance) AS distance, max(distance) AS longest"
    sql = catalog[ROUTES].sql.replace("max(distance) AS distance", longest)
    report = run_diff(changed(ROUTES, sql=sql, contract=RouteDailyWithLongest), ROUTES)
    (asset,) = report.assets
    assert asset.verdict == ADDITIVE
    for part in asset.partitions:
        routes = scalar(home, "SELECT count(*) FROM marts.route_daily WHERE flight_date = ?", [part.partition])
        assert part.schema["added"] == [["longest", "BIGINT"]] and not part.schema["removed"]
        assert (part.rows["added"], part.rows["removed"], part.rows["changed"]) == (0, 0, 0)
        assert part.rows["unchanged"] == routes
        assert [(c.column, c.status, c.null_rate_old, c.null_rate_new) for c in part.columns] == \
            [("longest", "added", None, 0.0)]
        # the contract's drift rule (warn) sees the new column: listed, no data changed by it
        assert [(r.rule, r.behaviour, r.old, r.new) for r in part.rules] == [("schema_drift", "warn", "pass", "fail")]
    assert report.exit_code("breaking") == 0 and report.exit_code("any") == 1


class RouteDailyWithoutCarriers(Contract):
    """Origin x destination x day (no carrier count)."""

    flight_date: Series[pd.Timestamp] = pa.Field(description="Local departure date.", metadata={"sql_type": "DATE"})
    origin: Series[pd.StringDtype] = pa.Field(isin=NYC_ORIGINS, description="Origin airport code.")
    dest: Series[pd.StringDtype] = pa.Field(description="Destination airport code.")
    flights: Series[pd.Int64Dtype] = pa.Field(ge=0, description="Scheduled flights.")
    cancelled: Series[pd.Int64Dtype] = pa.Field(ge=0, description="Cancelled flights.")
    mean_arr_delay: Series[pd.Float64Dtype] = pa.Field(nullable=True, description="Mean arrival delay, minutes.")
    distance: Series[pd.Int64Dtype] = pa.Field(gt=0, description="Route distance, miles.")


class RouteDailyMilesAsDouble(RouteDaily):
    """Origin x destination x day; distance as a DOUBLE."""

    distance: Series[pd.Float64Dtype] = pa.Field(gt=0, description="Route distance, miles.")


def test_a_column_removed_is_breaking(home: Path):
    sql = catalog[ROUTES].sql.replace("    count(DISTINCT carrier) AS carriers,\n", "")
    report = run_diff(changed(ROUTES, sql=sql, contract=RouteDailyWithoutCarriers), ROUTES)
    (asset,) = report.assets
    assert asset.verdict == BREAKING and report.exit_code("breaking") == 1
    for part in asset.partitions:
        routes = scalar(home, "SELECT count(*) FROM marts.route_daily WHERE flight_date = ?", [part.partition])
        assert part.schema["removed"] == [["carriers", "BIGINT"]] and part.why == ["column carriers removed"]
        assert (part.rows["removed"], part.rows["changed"], part.rows["unchanged"]) == (0, 0, routes)


def test_a_column_retyped_is_breaking_and_its_values_compare_as_text(home: Path):
    sql = catalog[ROUTES].sql.replace("max(distance) AS distance", "CAST(max(distance) AS DOUBLE) AS distance")
    report = run_diff(changed(ROUTES, sql=sql, contract=RouteDailyMilesAsDouble), ROUTES, days=[DAY])
    (part,) = report.assets[0].partitions
    routes = scalar(home, "SELECT count(*) FROM marts.route_daily WHERE flight_date = ?", [DAY])
    assert report.verdict == BREAKING and part.why == ["column distance retyped BIGINT -> DOUBLE"]
    assert part.schema["retyped"] == [["distance", "BIGINT", "DOUBLE"]]
    (distance,) = [c for c in part.columns if c.column == "distance"]
    assert (distance.status, distance.changed, distance.match_pct) == ("retyped", routes, 0.0)  # 760 vs 760.0
    assert part.rows["changed"] == routes


def test_a_pandas_staging_change_counts_exactly_in_its_column_and_ripples_downstream(home: Path):
    weather = catalog["staging.weather"]

    def staging_weather(raw_weather: pd.DataFrame) -> pd.DataFrame:
        """One row per station and UTC hour; temperatures above 38F read one degree warmer."""
        rows = weather.transform(raw_weather)
        return rows.assign(temp=rows["temp"].mask(rows["temp"] > 38, rows["temp"] + 1))

    before = fingerprint(home)
    report = run_diff(changed("staging.weather", transform=staging_weather), "staging.weather", downstream=True)
    assert fingerprint(home) == before  # the lineage was read from a scratch copy of the store
    assert [(a.asset, a.verdict) for a in report.assets] == [("staging.weather", CHANGED),
                                                             ("marts.flight_facts", CHANGED)]
    staged, facts = report.assets
    assert facts.why == "downstream of staging.weather"
    for table, asset, day_column in (("staging.weather", staged, "obs_date"), ("marts.flight_facts", facts,
                                                                               "flight_date")):
        for part in asset.partitions:
            warm = scalar(home, f"SELECT count(*) FROM {table} WHERE {day_column} = ? AND temp > 38", [part.partition])
            rows = scalar(home, f"SELECT count(*) FROM {table} WHERE {day_column} = ?", [part.partition])
            if warm == 0:  # (no flight left in the warm hour of DAY2)
                assert (part.status, part.rows, part.verdict) == (UNCHANGED, None, IDENTICAL)
                continue
            assert part.rows["changed"] == warm and part.rows["unchanged"] == rows - warm
            assert (part.rows["added"], part.rows["removed"]) == (0, 0)
            (temp,) = part.columns  # the changed column only
            assert (temp.column, temp.changed, temp.mean_diff, temp.max_diff) == ("temp", warm, 1.0, 1.0)
            assert all(set(e["before"]) == {"temp"} for e in part.examples)
    # the recorded column lineage: temp reaches flight_facts.temp, which nothing reads further
    assert [(e["from"], e["to"]) for e in staged.downstream] == [("staging.weather.temp", "marts.flight_facts.temp")]
    assert facts.downstream == []
    assert facts.partitions[0].rows["changed"] > 0


class StagingWeatherCalmer(StagingWeather):
    """One row per airport and UTC hour; a wind over 12 mph is quarantined."""

    wind_speed: Series[pd.Float64Dtype] = pa.Field(
        nullable=True, in_range={"min_value": 0, "max_value": 12}, description="Wind speed, mph.",
        metadata={"on_fail": "quarantine"})


def test_a_tightened_rule_lists_the_rows_it_now_catches(home: Path):
    report = run_diff(changed("staging.weather", contract=StagingWeatherCalmer), "staging.weather")
    (asset,) = report.assets
    assert asset.verdict == CHANGED
    for part in asset.partitions:
        windy = scalar(home, "SELECT count(*) FROM staging.weather WHERE obs_date = ? AND wind_speed > 12",
                       [part.partition])
        assert windy > 0
        (rule,) = part.rules
        assert (rule.rule, rule.behaviour, rule.old, rule.new) == ("wind_speed_in_range", "quarantine", "pass", "fail")
        assert (rule.failing_rows_old, rule.failing_rows_new) == (0, windy)
        assert rule.examples and all(e.startswith("wind_speed=") for e in rule.examples)
        assert part.quarantined == {"old": 0, "new": windy}
        assert (part.rows["removed"], part.rows["added"], part.rows["changed"]) == (windy, 0, 0)


def test_an_expired_input_snapshot_is_reported_and_the_other_partition_still_diffed(two_days: Path, tmp_path: Path,
                                                                                    monkeypatch):
    home = tmp_path / "copy"
    shutil.copytree(two_days, home, ignore=shutil.ignore_patterns("*.lock"))
    _isolate(monkeypatch, home)
    recorded = scalar(home, """SELECT content_hash FROM provline.version_log WHERE asset = 'marts.flight_facts'
                               AND partition = ?""", [DAY2])
    snapshot = home / "snapshots" / "marts.flight_facts" / DAY2 / f"{recorded}.parquet"
    snapshot.unlink()
    report = run_diff(changed(ROUTES, sql=route_sql(KEPT)), ROUTES)
    first, second = report.assets[0].partitions
    assert first.verdict == CHANGED and first.rows["removed"] > 0
    assert (second.status, second.verdict) == (CANNOT, None)
    assert second.reasons == [f"input snapshot of marts.flight_facts version {recorded} expired or missing "
                              f"({snapshot})"]
    assert report.assets[0].verdict == CHANGED and not report.assets[0].complete
    assert report.exit_code("breaking") == 0 and report.exit_code("any") == 1


def cli(capsys, monkeypatch, tables: dict | None, *argv: str) -> tuple[int, str]:
    for name, spec in (tables or {}).items():
        if spec is not catalog.specs[name]:
            monkeypatch.setitem(catalog.specs, name, spec)
    code = main(["diff", *argv])
    return code, capsys.readouterr().out


def test_fail_on_gives_the_exit_codes(home: Path, tmp_path: Path, capsys, monkeypatch):
    args = [ROUTES, "--partition", DAY]
    filtered = changed(ROUTES, sql=route_sql(KEPT))
    sql = catalog[ROUTES].sql.replace("    count(DISTINCT carrier) AS carriers,\n", "")
    removed = changed(ROUTES, sql=sql, contract=RouteDailyWithoutCarriers)
    assert cli(capsys, monkeypatch, None, *args, "--fail-on", "any")[0] == 0
    code, out = cli(capsys, monkeypatch, filtered, *args, "--fail-on", "breaking")
    assert code == 0 and f"{ROUTES}: CHANGED" in out and out.endswith("verdict: changed\n")
    assert cli(capsys, monkeypatch, filtered, *args, "--fail-on", "any")[0] == 1
    assert cli(capsys, monkeypatch, filtered, *args)[0] == 0  # no --fail-on: the diff is information
    code, out = cli(capsys, monkeypatch, removed, *args, "--fail-on", "breaking", "--markdown")
    assert code == 1 and "| `marts.route_daily` | **breaking** |" in out and "| removed | carriers | BIGINT |" in out
    page = tmp_path / "diff.html"
    code, out = cli(capsys, monkeypatch, removed, *args, "--fail-on", "any", "--html", str(page))
    assert code == 1 and out.endswith(f"verdict: breaking\nwrote {page}\n")
    assert '<td class="fail">breaking</td>' in page.read_text() and "<td>carriers</td>" in page.read_text()
    assert main(["diff", "no.such_table", "--partition", DAY]) == 2
    assert main(["diff", ROUTES]) == 2  # partitioned: a day is needed


@pytest.mark.slow
def test_the_cli_leaves_no_trace(home: Path, tmp_path: Path):
    """`provline diff` as a subprocess, on today's code: identical; nothing written to the warehouse, its
    snapshots, the lineage log or store, or Dagster's instance."""
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROVLINE_", "OPENLINEAGE"))}
    env |= {"PROVLINE_HOME": str(home), "DAGSTER_HOME": str(dagster_home)}
    before = fingerprint(home)
    page = tmp_path / "diff.html"

    def provline(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pipelines.cli", "diff", *argv], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)

    done = provline("--start", DAY, "--end", DAY2, "--json")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["assets"] == [] and found["notes"] == ["no asset's code version differs from its latest recorded one"]
    every = [spec.table for spec in catalog if spec.group == "flights" and spec.source is None]
    done = provline(*every, "--start", DAY, "--end", DAY2, "--fail-on", "any", "--html", str(page))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-2:] == ["verdict: identical", f"wrote {page}"]
    assert "<title>provline diff 2013-01-15..2013-01-16 (2 days): 5 asset(s)</title>" in page.read_text()
    assert fingerprint(home) == before
    assert list(dagster_home.iterdir()) == []
