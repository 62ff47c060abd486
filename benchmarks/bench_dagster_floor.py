"""Dagster's own floor for a range run: what recording per-partition results costs with no data work at all.

Trivial assets shaped like the flights group — a chain of ASSETS daily-partitioned assets, each reporting
per partition one materialization and CHECKS check evaluations exactly as the factory does (AssetMaterialization
and AssetCheckEvaluation events from a single-run backfill step) — materialized over the year's 365 days in
one `dagster asset materialize --partition-range` process (or one day: `--days 1`, `--partition 2013-01-15`),
for each Dagster instance storage:

  sqlite        a fresh DAGSTER_HOME with only `telemetry: enabled: false` (what a user has by default)
  consolidated  the same with Dagster's ConsolidatedSqliteEventLogStorage (one SQLite file for every run)
  postgres      dagster-postgres on a throwaway PostgreSQL 15 cluster on loopback, durable settings
                (fsync and synchronous_commit on, the server's defaults)
  postgres-async  the same server, Dagster's connections with `synchronous_commit=off` (dagster.yaml
                `params: {options: -c synchronous_commit=off}`: a commit does not wait for its WAL flush)
  postgres-pgbouncer  the same server and database through PgBouncer with session pooling (deploy/README.md):
                dagster-postgres opens a new connection for every storage call (SQLAlchemy NullPool), which
                PgBouncer answers with an idle server connection instead of PostgreSQL starting a backend
  postgres-pgbouncer-tx  the same with transaction pooling
  memory        an in-memory instance (`dagster.materialize`, in process: nothing kept after the run)

    python benchmarks/bench_dagster_floor.py --checks 0 3
    python benchmarks/bench_dagster_floor.py --days 1 --checks 0 3 --storage sqlite --repeat 3
    python benchmarks/bench_dagster_floor.py --checks 3 --storage sqlite memory --checks-per-run

The wall time includes the process start and imports (~3 s). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FIRST, LAST, DAY = "2013-01-01", "2013-12-31", "2013-01-15"
BOUNCED = {"postgres-pgbouncer": "session", "postgres-pgbouncer-tx": "transaction"}  # storage -> pool mode

DEFINITIONS = textwrap.dedent('''
    import os
    import warnings

    import dagster as dg

    warnings.simplefilter("ignore")
    DAILY = dg.DailyPartitionsDefinition(start_date="2013-01-01", end_date="2014-01-01")
    ASSETS = int(os.environ["FLOOR_ASSETS"])
    CHECKS = [int(n) for n in os.environ["FLOOR_CHECKS"].split(",")]  # per partition, for each asset
    PER_RUN = os.environ.get("FLOOR_PER_RUN") == "1"  # each check once for the run, as provline's opt-in


    def trivial(index):
        key = dg.AssetKey(f"a{index}")

        @dg.multi_asset(
            name=f"a{index}",
            specs=[dg.AssetSpec(key, deps=[f"a{index - 1}"] if index else [], partitions_def=DAILY)],
            check_specs=[dg.AssetCheckSpec(f"c{i}", asset=key, partitions_def=DAILY) for i in range(CHECKS[index])],
            partitions_def=DAILY, backfill_policy=dg.BackfillPolicy.single_run(), can_subset=True,
        )
        def _asset(context):
            for partition in context.partition_keys:
                yield dg.AssetMaterialization(asset_key=key, partition=partition, metadata={"rows": 1},
                                              tags={"dagster/data_version": partition})
                for i in range(0 if PER_RUN else CHECKS[index]):
                    yield dg.AssetCheckEvaluation(asset_key=key, check_name=f"c{i}", passed=True,
                                                  partition=partition, metadata={"failing_rows": 0})
            for i in range(CHECKS[index] if PER_RUN else 0):
                yield dg.AssetCheckEvaluation(asset_key=key, check_name=f"c{i}", passed=True,
                                              metadata={"partitions": len(context.partition_keys)})
            yield dg.Output(None, output_name=f"a{index}", metadata={"__source_asset_observation__": True})

        return _asset


    assets = [trivial(i) for i in range(ASSETS)]
    defs = dg.Definitions(assets=assets, executor=dg.in_process_executor)
''')

IN_PROCESS = textwrap.dedent('''
    import sys
    import dagster as dg
    sys.path.insert(0, sys.argv[1])
    import floor_defs
    instance = dg.DagsterInstance.ephemeral() if sys.argv[4] == "memory" else dg.DagsterInstance.get()
    # checks once per run: Dagster plans none per partition (as `provline run --checks-per-run` selects)
    selection = dg.AssetSelection.all().without_checks() if floor_defs.PER_RUN else None
    result = dg.materialize(floor_defs.assets, selection=selection, instance=instance, tags={
        "dagster/asset_partition_range_start": sys.argv[2], "dagster/asset_partition_range_end": sys.argv[3]})
    assert result.success
''')
"""`dagster.materialize` in one process, as `provline run` runs: on an in-memory instance, or DAGSTER_HOME's."""


def instance_yaml(storage: str, home: Path, pg_port: int | None, bouncer_ports: dict[str, int]) -> str:
    yaml = "telemetry:\n  enabled: false\n"
    if storage == "consolidated":
        yaml += ("event_log_storage:\n  module: dagster._core.storage.event_log\n"
                 f"  class: ConsolidatedSqliteEventLogStorage\n  config:\n    base_dir: {home / 'history'}\n")
    if storage.startswith("postgres"):
        from tests.backends.pgcluster import dagster_storage_yaml

        yaml += dagster_storage_yaml(bouncer_ports.get(storage, pg_port), "dagster", "dagster",
                                     "-c synchronous_commit=off" if storage == "postgres-async" else None)
    return yaml


def run_once(storage: str, assets: int, checks: int | list[int], pg_port: int | None, days: int,
             bouncer_ports: dict[str, int], planned_subset: bool = False, per_run: bool = False,
             in_process: bool = False) -> tuple[float, int]:
    """(wall seconds, events reported) of one run in fresh folders: the year's range, or one day. `checks`: per
    partition, for every asset or (a list) for each; `per_run`: each check reported once for the run instead;
    `in_process`: `dagster.materialize` in a Python process (as `provline run`), not `dagster asset materialize`."""
    first, last = (FIRST, LAST) if days == 365 else (DAY, DAY)
    with tempfile.TemporaryDirectory(prefix="floor-") as tmp:
        tmp = Path(tmp)
        (tmp / "floor_defs.py").write_text(DEFINITIONS)
        home = tmp / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text(instance_yaml(storage, home, pg_port, bouncer_ports))
        env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
        counts = checks if isinstance(checks, list) else [checks] * assets
        env.update(DAGSTER_HOME=str(home), FLOOR_ASSETS=str(assets), FLOOR_CHECKS=",".join(map(str, counts)),
                   FLOOR_PER_RUN="1" if per_run else "0")
        if planned_subset:
            env["DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"] = "true"
        if storage == "memory" or in_process or per_run:
            cmd = [sys.executable, "-c", IN_PROCESS, str(tmp), first, last, storage]
        else:
            cmd = [str(BIN / "dagster"), "asset", "materialize", "-f", str(tmp / "floor_defs.py"), "--select", "*",
                   *(["--partition-range", f"{first}...{last}"] if days == 365 else ["--partition", DAY])]
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=3600)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{storage}: {' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return wall, assets * days + (sum(counts) if per_run else days * sum(counts))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", type=int, default=7, help="partitioned assets in the chain (flights: 7)")
    parser.add_argument("--checks", type=int, nargs="+", default=[0, 3], help="check evaluations per partition")
    parser.add_argument("--storage", nargs="+",
                        default=["sqlite", "consolidated", "postgres", "postgres-pgbouncer", "memory"])
    parser.add_argument("--days", type=int, choices=[1, 365], default=365, help="the year's range, or one day")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--checks-per-run", action="store_true",
                        help="each check reported once for the run, none planned per partition (provline's opt-in "
                             "for big backfills); runs in process, as `provline run --checks-per-run`")
    parser.add_argument("--planned-subset", action="store_true",
                        help="DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS: one planned event per asset for a "
                             "range instead of one per partition (Dagster then does not mark a failed run's "
                             "partitions as failed)")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))
    from tests.backends.pgcluster import pg_cluster, pgbouncer  # a throwaway cluster, as the backend tests use

    print(f"load1 at start: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    rows = []
    with pg_cluster(durable=True) as pg, contextlib.ExitStack() as stack:
        pg.create_database("dagster", owner="dagster")
        bouncer_ports = {storage: stack.enter_context(pgbouncer(pg, ("dagster",), mode))
                         for storage, mode in BOUNCED.items() if storage in args.storage}
        for checks in args.checks:
            for storage in args.storage:
                walls = []
                for _ in range(args.repeat):
                    wall, events = run_once(storage, args.assets, checks, pg.port, args.days, bouncer_ports,
                                            args.planned_subset, args.checks_per_run)
                    walls.append(wall)
                    print(f"{storage} checks={checks}: {wall:.1f} s", file=sys.stderr)
                rows.append((checks, storage, statistics.median(walls), events))
    print(f"\n| days | checks per partition | storage | wall s (median of {args.repeat}) | per-partition events "
          "| ms per event |\n|---:|---:|---|---:|---:|---:|")
    for checks, storage, wall, events in rows:
        print(f"| {args.days} | {checks} | {storage} | {wall:.1f} | {events:,} | {1000 * wall / events:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
