"""The `provline` command.

    provline run --date 2024-05-01            the unpartitioned tables, then one day of the partitioned ones
    provline run --start 2024-05-01 --end 2024-05-31   a range of days in one Dagster run
    provline status                           what the warehouse holds (version log)
    provline health [--json] [--trends F]     per asset: freshness, failing checks, anomalies, what waits
    provline landing seed --start D --end D   split the source tables into daily landing files
    provline maintain                         retention: expire versions older than PROVLINE_SNAPSHOT_RETENTION_DAYS
    provline quarantine show TABLE --partition P   a partition's quarantined rows and their reasons
    provline lineage replay                   resend OpenLineage events waiting in the outbox
    provline lineage upstream|downstream|runs|versions|ingest|serve   lineage audits (pipelines/audit)
    provline verify DATASET --partition P     re-derive a version and compare content hashes
    provline diff [ASSET ...] --partition D | --start D1 --end D2 [--downstream] [--json | --markdown | --html F]
                                              what today's code does to the recorded data (pipelines/diff.py)
    provline audit report DATASET --out F     one self-contained HTML audit page
    provline contract export|import|check     the contracts as ODCS documents (pipelines/contracts)

`provline run` runs each domain's own jobs (`reference_tables`, then `flights_daily` for the day or the range),
executed in this process on the instance of DAGSTER_HOME when it is set, as runs of the code location: `dagster dev`
lists them on the job's page and in the timeline, and can re-execute them (pipelines/launch.py).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

import dagster as dg

from pipelines.settings import dagster_home, get_settings


def _instance() -> dg.DagsterInstance:
    if dagster_home() is None:
        return dg.DagsterInstance.ephemeral()
    return dg.DagsterInstance.get()


def _day(text: str, flag: str, partitions: dg.DailyPartitionsDefinition) -> date:
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise SystemExit(f"{flag} {text!r} is not a date (YYYY-MM-DD)") from None
    first = partitions.start.date()
    last = partitions.end.date() - timedelta(days=1) if partitions.end else date.today() - timedelta(days=1)
    if not first <= day <= last:
        raise SystemExit(f"{flag} {day} is outside the daily partitions {first}..{last}")
    return day


def _days(args: argparse.Namespace, partitions: dg.DailyPartitionsDefinition) -> list[str]:
    if args.date:
        return [_day(args.date, "--date", partitions).isoformat()]
    start, end = _day(args.start, "--start", partitions), _day(args.end or args.start, "--end", partitions)
    if end < start:
        raise SystemExit(f"--end {end} is before --start {start}")
    return [(start + timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]


def _launch(instance: dg.DagsterInstance, run, label: str, checks_per_run: bool = False) -> dg.DagsterRunStatus:
    """One Dagster run of a domain's job (pipelines/launch.py): its unpartitioned assets, or its partitioned ones for
    one day or a range of days. Prints what failed (rule, column, value, file and line: the step's own message) and
    returns how it ended. `checks_per_run`: a range's checks are reported once for the run (and not planned per
    partition)."""
    from pipelines.factory import CHECKS_PER_RUN_TAG
    from pipelines.launch import execute
    from pipelines.lineage.runs import ended_as, finish_run

    per_run = checks_per_run and run.days is not None and len(run.days) > 1
    result = execute(instance, run, {CHECKS_PER_RUN_TAG: "true"} if per_run else {}, without_checks=per_run)
    dagster_run = instance.get_run_by_id(result.run_id) or result.dagster_run
    finish_run(dagster_run)
    status = ended_as(dagster_run)
    print(f"{label}: {OUTCOME.get(status, status.value)} (run {result.run_id}, job {dagster_run.job_name})")
    if status == dg.DagsterRunStatus.FAILURE:  # an interrupt is no news
        for event in result.get_step_failure_events():
            print(f"  {event.step_key}: {_failure_text(event)}".replace("\n", "\n    "))
    return status


OUTCOME = {dg.DagsterRunStatus.SUCCESS: "ok", dg.DagsterRunStatus.FAILURE: "FAILED",
           dg.DagsterRunStatus.CANCELED: "INTERRUPTED"}


def _failure_text(event: dg.DagsterEvent) -> str:
    """A failed step in words: the factory's own message (a dg.Failure's description), or the error."""
    data = event.step_failure_data
    if data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description
    error, lines = data.error, []
    while error is not None:
        lines.append(error.message.strip())
        error = error.cause
    return "\n".join(lines)


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM stops the command as Ctrl-C does (Dagster's own CLIs map it the same way), so a
    terminated run still ends CANCELED, with lineage ABORT, instead of vanishing mid-step."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.getsignal(signal.SIGINT))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_run(args: argparse.Namespace) -> int:
    """The unpartitioned tables, then each day's partitioned tables (every domain whose partitions have it).
    An interrupt (Ctrl-C, SIGTERM, or a cancel through the Dagster instance) ends the run, the range with it,
    exit 130."""
    with _terminate_as_interrupt():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from pipelines.launch import plan
    from pipelines.lineage.runs import INTERRUPTED
    from pipelines.warehouse import Warehouse

    warehouse = Warehouse.from_settings()  # as configured now (the environment)
    runs = plan(warehouse, lambda partitions: _days(args, partitions), with_unpartitioned=not args.skip_reference)
    instance = _instance()
    print(f"warehouse: {warehouse.location}")
    failed = 0
    try:
        for run in runs:
            label = f"partitions {_span(run.days)}" if run.days else "unpartitioned tables"
            status = _launch(instance, run, label, args.checks_per_run or get_settings().checks_per_run)
            if status == dg.DagsterRunStatus.CANCELED:
                return INTERRUPTED
            if status != dg.DagsterRunStatus.SUCCESS and run.days is None:  # the daily tables need the others
                return 1
            failed += status != dg.DagsterRunStatus.SUCCESS
    except KeyboardInterrupt:  # between runs (inside one, Dagster turns it into a canceled run)
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    return 1 if failed else 0


def _span(days: list[str]) -> str:
    return days[0] if len(days) == 1 else f"{days[0]}..{days[-1]}"


def cmd_status(args: argparse.Namespace) -> int:
    from pipelines.warehouse import Warehouse

    warehouse = Warehouse.from_settings()
    if not warehouse.exists():  # (asking creates nothing: status on a mistyped lake must not make one)
        print("[]" if args.json else f"no warehouse at {warehouse.location} yet")
        return 0
    rows = [tuple(row) for row in warehouse.status().itertuples(index=False)]
    if args.json:
        keys = ("asset", "partitions", "rows", "last_written")
        print(json.dumps([dict(zip(keys, map(str, r), strict=True)) for r in rows]))
    else:
        for asset, partitions, n, last in rows:
            print(f"{asset:35} {partitions:>4} partition(s) {n:>9} rows  last written {last}")
    return 0


def cmd_maintain(args: argparse.Namespace) -> int:
    from pipelines.warehouse import Warehouse

    print(Warehouse.from_settings().maintain())
    return 0


def _verify(dataset: str, partition: str | None, version: str | None):
    from pipelines.definitions import catalog
    from pipelines.verify import verify
    from pipelines.warehouse import Warehouse

    return verify(dataset, partition, version, tables=catalog.specs, warehouse=Warehouse.from_settings())


def cmd_diff(args: argparse.Namespace) -> int:
    """Today's code against the recorded versions: a summary, JSON, Markdown or an HTML page; the exit code
    follows --fail-on (1 when met, 2 when the diff cannot start)."""
    from pipelines.audit import diff_report
    from pipelines.definitions import catalog
    from pipelines.diff import DiffError, diff
    from pipelines.warehouse import Warehouse

    try:
        days = _dated(args)
        report = diff(args.assets or None, days, tables=catalog.specs, warehouse=Warehouse.from_settings(),
                      downstream=args.downstream)
    except DiffError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    found = report.as_dict()
    if args.json:
        print(json.dumps(found, indent=2, default=str))
    elif args.markdown:
        print(diff_report.markdown(found), end="")
    else:
        if args.html:
            Path(args.html).write_text(diff_report.html(found), encoding="utf-8")
        print(diff_report.text(found) + (f"\nwrote {args.html}" if args.html else ""))
    return report.exit_code(args.fail_on)


def _dated(args: argparse.Namespace) -> list[str]:
    """The days of --partition, or of --start..--end (inclusive); none when neither is given."""
    from pipelines.diff import DiffError

    if args.end and not args.start:
        raise DiffError("--end goes with --start")
    try:
        first = date.fromisoformat(args.partition or args.start) if args.partition or args.start else None
        last = date.fromisoformat(args.end) if args.end else first
    except ValueError as error:
        raise DiffError(f"not a date (YYYY-MM-DD): {error}") from None
    if first is None:
        return []
    if last < first:
        raise DiffError(f"--end {last} is before --start {first}")
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def cmd_quarantine_show(args: argparse.Namespace) -> int:
    """A partition's quarantined rows with their reasons, and the source rows kept out of every partition."""
    from pipelines.definitions import catalog
    from pipelines.quality import SOURCE_COVERAGE_RULE
    from pipelines.warehouse import Warehouse, quarantine_table

    spec = catalog.get(args.table)
    if spec is None:
        raise SystemExit(f"no table {args.table!r}; the tables are {', '.join(sorted(catalog.specs))}")
    if spec.partitioned != bool(args.partition):
        raise SystemExit(f"{args.table} is {'' if spec.partitioned else 'not '}partitioned: "
                         + ("give --partition YYYY-MM-DD" if spec.partitioned else "leave out --partition"))
    warehouse, partition = Warehouse.from_settings(), args.partition or ""
    if not warehouse.exists():
        raise SystemExit(f"no warehouse at {warehouse.location}")
    table = quarantine_table(spec.table)
    with warehouse.connect() as con:
        frame = warehouse.read(con, table, [partition], spec.daily_on) if warehouse.table_exists(con, table) else None
        outside = con.execute(
            """SELECT "column", failing_value, row_key FROM quality.failures
               WHERE asset = $asset AND partition = $partition AND check_name = $rule ORDER BY row_key""",
            {"asset": spec.table, "partition": partition, "rule": SOURCE_COVERAGE_RULE}).fetchall()
    rules = {rule.name: rule for rule in spec.rules}
    rows = [_quarantined_row(row, rules) for row in (frame.to_pandas().to_dict("records") if frame is not None else [])]
    found = {"table": spec.table, "partition": args.partition, "quarantine_table": table, "rows": rows,
             "outside_partitions": [{"columns": c, "values": v, "row": k} for c, v, k in outside]}
    if args.json:
        print(json.dumps(found, indent=2, default=str))
        return 0
    print(f"{spec.table} [{args.partition or 'unpartitioned'}]: {len(rows)} quarantined row(s) in {table}")
    for row in rows:
        for reason in row["reasons"]:
            print(f"  {reason['rule']}: {reason['column']}={reason['value']!r} ({reason['description']})")
        where = f" ({row['source']})" if row["source"] else ""
        print(f"      row{where}, run {row['run_id']}: " + ", ".join(f"{k}={v}" for k, v in row["row"].items()))
    if outside:
        print(f"{len(outside)} source row(s) belong to no partition and were kept out ({SOURCE_COVERAGE_RULE}):")
        for stray in found["outside_partitions"]:
            print(f"  {stray['values']} ({stray['row']})")
    return 0


def _quarantined_row(row: dict, rules: dict) -> dict:
    """A quarantined row: its reasons (rule, column, value, what the rule says), where it came from, its values."""
    reasons, _, source = str(row.pop("_quarantine_reasons")).partition(" (")
    run_id = row.pop("_run_id")
    found = []
    for name in reasons.split(","):
        rule = rules.get(name)
        column = rule.column if rule is not None else None
        found.append({"rule": name, "column": column, "value": row.get(column) if column else None,
                      "description": rule.description if rule is not None else "(a rule no longer in the contract)"})
    return {"reasons": found, "source": source.removesuffix(")") or None, "run_id": run_id, "row": row}


def cmd_health(args: argparse.Namespace) -> int:
    from pipelines.definitions import catalog
    from pipelines.monitor.health import render, summarize
    from pipelines.warehouse import Warehouse

    settings = get_settings()
    warehouse = Warehouse.from_settings(settings)
    health = summarize(catalog, warehouse, settings)
    print(json.dumps(health.as_dict(), indent=2, default=str) if args.json else render(health))
    if args.trends:  # the per-partition trends, as a page to look at (pipelines/monitor/trends.py)
        from pipelines.monitor import trends

        Path(args.trends).write_text(trends.render(trends.collect(catalog, warehouse)), encoding="utf-8")
        print(f"wrote {args.trends}", file=sys.stderr if args.json else sys.stdout)
    return 0


def cmd_landing_seed(args: argparse.Namespace) -> int:
    from pipelines.definitions import catalog
    from pipelines.monitor.landing import landing_sources, seed

    folder = Path(args.to) if args.to else get_settings().landing_folder
    if folder is None:
        raise SystemExit("provline landing seed: set PROVLINE_LANDING_DIR or pass --to DIR")
    sources = landing_sources(list(catalog))
    for partitions in dict.fromkeys(spec.partitions for spec in sources):
        days = _days(args, partitions)
        written = seed([spec for spec in sources if spec.partitions is partitions], days, folder)
        print(f"{len(written)} landing file(s) for {_span(days)} in {folder}")
    return 0


def cmd_lineage_replay(args: argparse.Namespace) -> int:
    from pipelines.lineage import main_replay

    return main_replay()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="provline", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="materialize the unpartitioned tables, then daily partitions")
    when = run.add_mutually_exclusive_group(required=True)
    when.add_argument("--date", help="one day, YYYY-MM-DD")
    when.add_argument("--start", help="first day of a range")
    run.add_argument("--end", help="last day of the range (inclusive)")
    run.add_argument("--skip-reference", action="store_true", help="do not rebuild the unpartitioned tables")
    run.add_argument("--checks-per-run", action="store_true",
                     help="a range reports each asset check once for the run, not per partition (big backfills; "
                          "per-partition verdicts stay in provline health and OpenLineage)")
    run.set_defaults(func=cmd_run)

    status = commands.add_parser("status", help="the tables in the warehouse and their latest versions")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    health = commands.add_parser("health", help="per asset: freshness, failing checks, anomalies, what waits")
    health.add_argument("--json", action="store_true")
    health.add_argument("--trends", metavar="FILE", help="also write the per-partition trends (rows, quarantined and "
                        "failing rows, null rates, means, anomalies) as one HTML page")
    health.set_defaults(func=cmd_health)

    landing = commands.add_parser("landing", help="the landing zone (PROVLINE_LANDING_DIR)")
    seed = landing.add_subparsers(dest="landing", required=True).add_parser(
        "seed", help="split the partitioned source tables into daily landing files (demos, tests)")
    seed.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
    seed.add_argument("--end", help="last day (inclusive; default: --start)")
    seed.add_argument("--to", help="the landing folder (default: PROVLINE_LANDING_DIR)")
    seed.set_defaults(func=cmd_landing_seed, date=None)

    maintain = commands.add_parser("maintain", help="expire versions older than the retention period "
                                   "(DuckLake: snapshots and their files; run it daily)")
    maintain.set_defaults(func=cmd_maintain)

    quarantine = commands.add_parser("quarantine", help="quarantined rows") \
        .add_subparsers(dest="quarantine", required=True)
    show = quarantine.add_parser("show", help="a partition's quarantined rows with their reasons")
    show.add_argument("table", help="e.g. staging.weather")
    show.add_argument("--partition", help="YYYY-MM-DD (omit for unpartitioned tables)")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_quarantine_show)

    lineage = commands.add_parser("lineage", help="OpenLineage events").add_subparsers(dest="lineage", required=True)
    replay = lineage.add_parser("replay", help="resend the events the backend refused, in order, exactly once")
    replay.set_defaults(func=cmd_lineage_replay)

    from pipelines.audit.cli import add_lineage_commands, add_top_level_commands

    add_lineage_commands(lineage)
    add_top_level_commands(commands, verify=_verify)
    changes = commands.add_parser("diff", help="what today's code does to the recorded data, per partition and "
                                  "downstream, before it ships")
    changes.add_argument("assets", nargs="*", metavar="ASSET",
                         help="default: the assets whose code version differs from the latest recorded one")
    days = changes.add_mutually_exclusive_group()
    days.add_argument("--partition", help="one day, YYYY-MM-DD")
    days.add_argument("--start", help="first day of a range")
    changes.add_argument("--end", help="last day of the range (inclusive)")
    changes.add_argument("--downstream", action="store_true",
                         help="re-derive and diff the assets that read the changed columns, in dependency order")
    shown = changes.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true")
    shown.add_argument("--markdown", action="store_true", help="Markdown, ready to paste into a pull request")
    shown.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page")
    changes.add_argument("--fail-on", choices=["breaking", "any"],
                         help="exit 1 on a breaking change, or on any change (or a partition not diffed)")
    changes.set_defaults(func=cmd_diff)

    from pipelines.contracts.cli import add_contract_commands

    add_contract_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
