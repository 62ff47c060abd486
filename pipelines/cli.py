"""The `provline` command.

    provline run --date 2024-05-01            the unpartitioned tables, then one day of the partitioned ones
    provline run --start 2024-05-01 --end 2024-05-31   a range of days in one Dagster run
    provline status                           what the warehouse holds (version log)
    provline maintain                         retention: expire versions older than PROVLINE_SNAPSHOT_RETENTION_DAYS
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
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from pipelines.settings import get_settings


def _instance() -> dg.DagsterInstance:
    if get_settings().dagster_home is None:
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


def _materialize(instance: dg.DagsterInstance, resources: dict, selection: list, label: str,
                 days: list[str] | None = None) -> bool:
    """One Dagster run: the unpartitioned assets, or the partitioned ones for one day or a range of days."""
    from pipelines.lineage.sensors import finish_run

    partition, tags = None, {}
    if days and len(days) == 1:
        partition = days[0]
    elif days:  # a range in one run (the assets' backfill policy is single-run)
        tags = {ASSET_PARTITION_RANGE_START_TAG: days[0], ASSET_PARTITION_RANGE_END_TAG: days[-1]}
    result = dg.materialize(selection, partition_key=partition, instance=instance, resources=resources, tags=tags,
                            raise_on_error=False)
    finish_run(instance.get_run_by_id(result.run_id) or result.dagster_run)
    print(f"{label}: {'ok' if result.success else 'FAILED'} (run {result.run_id})")
    return result.success


def cmd_run(args: argparse.Namespace) -> int:
    """The unpartitioned tables, then each day's partitioned tables (every domain whose partitions have it)."""
    from pipelines.definitions import defs
    from pipelines.warehouse import Warehouse

    assets = list(defs.assets)
    daily = [a for a in assets if a.partitions_def is not None]
    by_partitions: dict[dg.PartitionsDefinition, list] = {}
    for asset in daily:
        by_partitions.setdefault(asset.partitions_def, []).append(asset)
    work = [(partitions, members, _days(args, partitions)) for partitions, members in by_partitions.items()]
    instance = _instance()
    resources = {"warehouse": Warehouse.from_settings()}  # as configured now (the environment)
    print(f"warehouse: {resources['warehouse'].location}")
    others = [a for a in assets if a.partitions_def is None]
    if not args.skip_reference and others and not _materialize(instance, resources, others, "unpartitioned tables"):
        return 1
    failed = sum(not _materialize(instance, resources, members, f"partitions {_span(days)}", days)
                 for _, members, days in work)
    return 1 if failed else 0


def _span(days: list[str]) -> str:
    return days[0] if len(days) == 1 else f"{days[0]}..{days[-1]}"


def cmd_status(args: argparse.Namespace) -> int:
    from pipelines.warehouse import Warehouse

    status = Warehouse.from_settings().status()
    rows = [tuple(row) for row in status.itertuples(index=False)]
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
    run.set_defaults(func=cmd_run)

    status = commands.add_parser("status", help="the tables in the warehouse and their latest versions")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    maintain = commands.add_parser("maintain", help="expire versions older than the retention period "
                                   "(DuckLake: snapshots and their files; run it daily)")
    maintain.set_defaults(func=cmd_maintain)

    lineage = commands.add_parser("lineage", help="OpenLineage events").add_subparsers(dest="lineage", required=True)
    replay = lineage.add_parser("replay", help="resend the events the backend refused, in order, exactly once")
    replay.set_defaults(func=cmd_lineage_replay)

    from pipelines.audit.cli import add_lineage_commands, add_top_level_commands

    add_lineage_commands(lineage)
    add_top_level_commands(commands, verify=_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
