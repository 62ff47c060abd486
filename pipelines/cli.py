"""The `provline` command.

    provline run --date 2013-01-15            reference tables, then one day of flights
    provline run --start 2013-01-01 --end 2013-01-31
    provline status                           what the warehouse holds (version log)
    provline lineage replay                   resend OpenLineage events waiting in the outbox
    provline lineage upstream|downstream|runs|versions|ingest|serve   lineage audits (pipelines/audit)
    provline verify DATASET --partition P     re-derive a version and compare content hashes
    provline audit report DATASET --out F     one self-contained HTML audit page

Runs go through Dagster (`materialize`) on the instance of DAGSTER_HOME when it is set, so they
show in `dagster dev`; the two `dagster asset materialize` forms in the README do the same.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date, timedelta

import dagster as dg

from pipelines.settings import get_settings


def _instance() -> dg.DagsterInstance:
    if get_settings().dagster_home is None:
        return dg.DagsterInstance.ephemeral()
    return dg.DagsterInstance.get()


def _day(text: str, flag: str) -> date:
    from pipelines.factory import DAILY_RANGE

    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise SystemExit(f"{flag} {text!r} is not a date (YYYY-MM-DD)") from None
    if not DAILY_RANGE[0] <= day < DAILY_RANGE[1]:
        raise SystemExit(f"{flag} {day} is outside the daily partitions {DAILY_RANGE[0]}..{DAILY_RANGE[1]} (exclusive)")
    return day


def _days(args: argparse.Namespace) -> list[str]:
    if args.date:
        return [_day(args.date, "--date").isoformat()]
    start, end = _day(args.start, "--start"), _day(args.end or args.start, "--end")
    if end < start:
        raise SystemExit(f"--end {end} is before --start {start}")
    return [(start + timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]


def _materialize(instance: dg.DagsterInstance, group: str, partition: str | None = None) -> bool:
    from pipelines.definitions import all_assets
    from pipelines.lineage.sensors import finish_run

    result = dg.materialize(all_assets, selection=dg.AssetSelection.groups(group), partition_key=partition,
                            instance=instance, raise_on_error=False)
    finish_run(instance.get_run_by_id(result.run_id) or result.dagster_run)
    print(f"{group} {partition or ''}: {'ok' if result.success else 'FAILED'} (run {result.run_id})")
    return result.success


def cmd_run(args: argparse.Namespace) -> int:
    days = _days(args)
    instance = _instance()
    print(f"warehouse: {get_settings().warehouse_path}")
    if not args.skip_reference and not _materialize(instance, "reference"):
        return 1
    failed = sum(not _materialize(instance, "flights", day) for day in days)
    return 1 if failed else 0


def cmd_status(args: argparse.Namespace) -> int:
    from pipelines.warehouse import Warehouse

    with Warehouse().connect() as con:
        rows = con.execute(
            """SELECT asset, count(DISTINCT partition) AS partitions, sum(row_count) FILTER (WHERE latest) AS rows,
                      max(written_at) AS last_written
               FROM (SELECT *, row_number() OVER (PARTITION BY asset, partition ORDER BY written_at DESC) = 1
                     AS latest FROM provline.version_log)
               GROUP BY asset ORDER BY asset"""
        ).fetchall()
    if args.json:
        keys = ("asset", "partitions", "rows", "last_written")
        print(json.dumps([dict(zip(keys, map(str, r), strict=True)) for r in rows]))
    else:
        for asset, partitions, n, last in rows:
            print(f"{asset:35} {partitions:>4} partition(s) {n:>9} rows  last written {last}")
    return 0


def cmd_lineage_replay(args: argparse.Namespace) -> int:
    from pipelines.lineage import main_replay

    return main_replay()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="provline", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="materialize reference tables and daily flights partitions")
    when = run.add_mutually_exclusive_group(required=True)
    when.add_argument("--date", help="one day, YYYY-MM-DD (2013-01-01..2013-12-31)")
    when.add_argument("--start", help="first day of a range")
    run.add_argument("--end", help="last day of the range (inclusive)")
    run.add_argument("--skip-reference", action="store_true", help="do not rebuild the reference tables")
    run.set_defaults(func=cmd_run)

    status = commands.add_parser("status", help="the tables in the warehouse and their latest versions")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    lineage = commands.add_parser("lineage", help="OpenLineage events").add_subparsers(dest="lineage", required=True)
    replay = lineage.add_parser("replay", help="resend the events the backend refused, in order, exactly once")
    replay.set_defaults(func=cmd_lineage_replay)

    from pipelines.audit.cli import add_lineage_commands, add_top_level_commands

    add_lineage_commands(lineage)
    add_top_level_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
