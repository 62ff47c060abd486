"""Benchmark of issue 22: `provline diff` against `provline verify`, on February 2013 of the flights domain.

A fresh PROVLINE_HOME gets the reference tables and February 2013 (one range run through Dagster), then, each
the median of --repeat runs through the Python API (pipelines.diff.diff, pipelines.verify.verify):

  verify, unchanged       verify marts.flight_facts [DAY] with today's code
  diff, unchanged         diff marts.flight_facts [DAY] with today's code (goal: <= verify)
  verify, changed         verify marts.flight_facts [DAY] with a changed SQL (dep_delay + 1): it differs
  diff, changed           diff of that change (goal: <= 2x verify)
  month, --downstream     diff of staging.weather (pandas: temp > 38 F one degree warmer) over the month, downstream
                          re-derived (flight_facts), and of the flight_facts change over the month (which ripples
                          to carrier_daily_performance through dep_delay) (goal: <= 60 s)

    python benchmarks/bench_diff.py --repeat 5
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FIRST, LAST, DAY = "2013-02-01", "2013-02-28", "2013-02-12"


def _build(home: Path) -> float:
    import dagster as dg

    from pipelines.definitions import defs
    from pipelines.factory import resources

    started = time.perf_counter()
    run = dict(resources=resources(), raise_on_error=False)
    assert dg.materialize(list(defs.assets), selection=dg.AssetSelection.groups("reference"), **run).success
    tags = {"dagster/asset_partition_range_start": FIRST, "dagster/asset_partition_range_end": LAST}
    assert dg.materialize(list(defs.assets), selection=dg.AssetSelection.groups("flights"), tags=tags, **run).success
    return time.perf_counter() - started


def _timed(repeat: int, call) -> tuple[float, list[float], object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-diff-")) / "provline"
    os.environ["PROVLINE_HOME"] = str(home)
    import pandas as pd

    from pipelines.definitions import catalog
    from pipelines.diff import diff
    from pipelines.verify import verify
    from pipelines.warehouse import Warehouse

    load_start = os.getloadavg()
    try:
        built = _build(home)
        warehouse = Warehouse.from_settings()
        facts = catalog["marts.flight_facts"]
        changed_facts = {**catalog.specs, facts.table: dataclasses.replace(
            facts, sql=facts.sql.replace("    f.dep_delay,\n", "    f.dep_delay + 1 AS dep_delay,\n"))}
        weather = catalog["staging.weather"]

        def warmer(raw_weather: pd.DataFrame) -> pd.DataFrame:
            rows = weather.transform(raw_weather)
            return rows.assign(temp=rows["temp"].mask(rows["temp"] > 38, rows["temp"] + 1))

        changed_weather = {**catalog.specs, weather.table: dataclasses.replace(weather, transform=warmer)}
        month = [d.strftime("%Y-%m-%d") for d in pd.date_range(FIRST, LAST)]

        def verify_of(tables):
            return lambda: verify(facts.table, DAY, None, tables=tables, warehouse=warehouse)

        def diff_of(tables, asset, days, downstream=False):
            return lambda: diff([asset], days, tables=tables, warehouse=warehouse, downstream=downstream)

        rows = [
            ("verify marts.flight_facts [DAY], unchanged", verify_of(catalog.specs), "reproduced"),
            ("diff marts.flight_facts [DAY], unchanged", diff_of(catalog.specs, facts.table, [DAY]), "identical"),
            ("verify marts.flight_facts [DAY], changed SQL", verify_of(changed_facts), "differs"),
            ("diff marts.flight_facts [DAY], changed SQL", diff_of(changed_facts, facts.table, [DAY]), "changed"),
            ("diff staging.weather, the month, --downstream", diff_of(changed_weather, weather.table, month, True),
             "changed"),
            ("diff marts.flight_facts, the month, --downstream", diff_of(changed_facts, facts.table, month, True),
             "changed"),
        ]
        print(f"built reference + {FIRST}..{LAST} in {built:.1f} s; DAY = {DAY}; repeat {args.repeat}")
        print("| measure | median | runs | result |\n|---|---:|---|---|")
        for label, call, expected in rows:
            median, times, result = _timed(args.repeat, call)
            found = getattr(result, "verdict", None)
            assets = ", ".join(f"{a.asset} {a.verdict}" for a in getattr(result, "assets", []))
            assert found == expected, (label, found)
            print(f"| {label} | {median:.2f} s | {', '.join(f'{t:.2f}' for t in times)} | {found}"
                  f"{f' ({assets})' if assets else ''} |")
    finally:
        shutil.rmtree(home.parent, ignore_errors=True)
    print(f"load average (1, 5, 15 min): at the start {load_start}, at the end {os.getloadavg()}; "
          f"nproc {os.cpu_count()}")


if __name__ == "__main__":
    main()
