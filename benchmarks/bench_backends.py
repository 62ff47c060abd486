"""Benchmark of issue 9: the DuckLake backend (PostgreSQL catalog, local data path) against the DuckDB file.

  one day     group reference, then group flights for DAY: two in-process Dagster runs in one process
  one month   group reference, then January 2013 as one range run (what `provline run --start --end` does:
              the assets' backfill policy is single-run)
  writers     two days of flights after the reference tables: one writer doing both days, against two
              writers (processes; for the lake each with its own PROVLINE_HOME, like two hosts) at once,
              one day each. The file backend's two writers share its file lock.

Every measurement starts from an empty warehouse: a fresh PROVLINE_HOME, and for the lake a fresh
catalog database and data folder on a throwaway PostgreSQL cluster on loopback (tests/backends/pgcluster.py).
Times are wall seconds of the materializations inside worker processes, imports excluded (the workers
import, then wait for a common start signal). Medians over --repeat; the month runs once (--month).
The load average at the start of each measurement is printed: the machine is shared.

    python benchmarks/bench_backends.py --repeat 3 --month
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DAY, OTHER_DAY = "2013-01-15", "2013-01-16"
MONTH = [(date(2013, 1, 1) + timedelta(days=n)).isoformat() for n in range(31)]


# ---- the worker: one writer process --------------------------------------------------------------


def worker(args: argparse.Namespace) -> None:
    import dagster as dg
    from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

    from pipelines.definitions import defs
    from pipelines.factory import resources

    conflicts = []
    handler = logging.Handler()
    handler.emit = lambda record: conflicts.append(record) if "commit conflict" in record.getMessage() else None
    logging.getLogger("provline.warehouse").addHandler(handler)
    go = Path(args.go)
    while not go.exists():  # every writer starts together, after its imports
        time.sleep(0.01)
    start = time.time()
    resources = resources()
    runs = [("reference", None, {})] if args.reference else []
    if args.range and args.days:  # one run for all the days, as `provline run --start --end`
        runs.append(("flights", None, {ASSET_PARTITION_RANGE_START_TAG: args.days[0],
                                       ASSET_PARTITION_RANGE_END_TAG: args.days[-1]}))
    else:
        runs += [("flights", day, {}) for day in args.days]
    for group, partition, tags in runs:
        result = dg.materialize(list(defs.assets), selection=dg.AssetSelection.groups(group), tags=tags,
                                partition_key=partition, resources=resources, raise_on_error=False)
        if not result.success:
            raise SystemExit(f"{group} {partition or tags} failed")
    print(json.dumps({"start": start, "end": time.time(), "conflicts": len(conflicts)}))


# ---- the driver ----------------------------------------------------------------------------------


def writers(env_per_writer: list[dict], days_per_writer: list[list[str]], reference: bool, work: Path,
            one_range: bool = False) -> dict:
    """Start one worker per writer, let them import, start them together; wall s from start to the last end."""
    go = work / f"go-{uuid.uuid4().hex}"
    procs = [
        subprocess.Popen([sys.executable, __file__, "worker", "--go", str(go), *(["--reference"] if reference else []),
                          *(["--range"] if one_range else []), *days],
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for env, days in zip(env_per_writer, days_per_writer, strict=True)
    ]
    time.sleep(8)  # imports (pandas, dagster, the project) before the start signal
    go.touch()
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit("a writer failed")
    return {"seconds": max(o["end"] for o in outs) - min(o["start"] for o in outs),
            "conflicts": sum(o["conflicts"] for o in outs)}


class Backend:
    def __init__(self, name: str, work: Path, pg=None):
        self.name, self.work, self.pg = name, work, pg

    def fresh(self, homes: int = 1) -> list[dict]:
        """Environments of `homes` writers on one new, empty warehouse."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PROVLINE_", "OPENLINEAGE", "DAGSTER_"))}
        run = self.work / uuid.uuid4().hex[:8]
        if self.pg is None:  # the file: every writer must use the same PROVLINE_HOME
            return [{**base, "PROVLINE_HOME": str(run / "home")} for _ in range(homes)]
        from pipelines.warehouse.ducklake import PREFIX

        database = "bench_" + run.name
        self.pg.create_database(database, owner="provline")
        lake = {"PROVLINE_WAREHOUSE": PREFIX + self.pg.conninfo(database, "provline"),
                "PROVLINE_LAKE_DATA_PATH": str(run / "lake-data")}
        return [{**base, **lake, "PROVLINE_HOME": str(run / f"home-{n}")} for n in range(homes)]


def load() -> float:
    return os.getloadavg()[0]


def measure(backend: Backend, what: str, repeat: int) -> dict:
    samples, loads, conflicts = [], [], 0
    for _ in range(repeat):
        loads.append(load())
        if what == "one day":
            out = writers(backend.fresh(), [[DAY]], True, backend.work)
        elif what == "one month":
            out = writers(backend.fresh(), [MONTH], True, backend.work, one_range=True)
        else:
            envs = backend.fresh(2)
            writers(envs[:1], [[]], True, backend.work)  # the reference tables first, not timed
            if what == "two days, one writer":
                out = writers(envs[:1], [[DAY, OTHER_DAY]], False, backend.work)
            else:
                out = writers(envs, [[DAY], [OTHER_DAY]], False, backend.work)
        samples.append(out["seconds"])
        conflicts += out["conflicts"]
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "n": repeat,
            "loads": loads, "conflicts": conflicts}


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode")
    w = sub.add_parser("worker")
    w.add_argument("--go", required=True)
    w.add_argument("--reference", action="store_true")
    w.add_argument("--range", action="store_true", help="the days as one range run")
    w.add_argument("days", nargs="*")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--month", action="store_true", help="also one month, as one range run")
    args = parser.parse_args()
    if args.mode == "worker":
        return worker(args)

    sys.path.insert(0, str(REPO))
    from tests.backends.pgcluster import pg_cluster

    whats = ["one day", *(["one month"] if args.month else []), "two days, one writer", "two days, two writers at once"]
    with tempfile.TemporaryDirectory(prefix="bench-backends-") as tmp, pg_cluster() as pg:
        pg.create_role("provline")
        results = {}
        for backend in (Backend("DuckDB file", Path(tmp)), Backend("DuckLake (PostgreSQL 15 catalog)", Path(tmp), pg)):
            for what in whats:
                results[(backend.name, what)] = r = measure(backend, what, 1 if what == "one month" else args.repeat)
                print(f"{backend.name:35} {what:32} {r['median']:8.2f}s  {r}", file=sys.stderr, flush=True)
    print(f"\n`python benchmarks/bench_backends.py --repeat {args.repeat}{' --month' if args.month else ''}`, "
          f"{os.cpu_count()} cores\n")
    print("| what | DuckDB file, s median (min-max) | DuckLake, s median (min-max) | lake / file | "
          "lake conflicts retried | load1 at start (file; lake) |")
    print("|---|---|---|---|---|---|")
    for what in whats:
        f, lk = results[("DuckDB file", what)], results[("DuckLake (PostgreSQL 15 catalog)", what)]
        print(f"| {what} | {f['median']:.2f} ({f['min']:.2f}-{f['max']:.2f}) | {lk['median']:.2f} "
              f"({lk['min']:.2f}-{lk['max']:.2f}) | {lk['median'] / f['median']:.2f}x | {lk['conflicts']} | "
              f"{', '.join(f'{x:.1f}' for x in f['loads'])}; {', '.join(f'{x:.1f}' for x in lk['loads'])} |")
    for name in ("DuckDB file", "DuckLake (PostgreSQL 15 catalog)"):
        one, two = results[(name, "two days, one writer")], results[(name, "two days, two writers at once")]
        print(f"\n{name}: two writers at once / one writer = {two['median'] / one['median']:.2f}x")


if __name__ == "__main__":
    main()
