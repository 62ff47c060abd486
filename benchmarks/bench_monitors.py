"""Benchmark of issues 12 and 21: false alarms of the anomaly monitors and of the contract checks on the real data.

The flights pipeline runs 2013-01-01..2013-03-31 into a fresh PROVLINE_HOME (the reference tables, then the
quarter as one range run: the monitors judge the partitions in order, each against the previous ones), and
every anomaly check that fired on 2013-01-15..2013-03-31 is counted per month, from quality.check_results.
No day of this range has a data defect: every alarm is a false one (weekends, holidays and the storms of
2013-02-08/09 and 2013-03-06/08 included).

Then the same statistics are judged again offline with `pipelines.monitor.anomaly.expected` (the monitors'
own code) under other settings, to show what the defaults and the contracts' exemptions buy: every column's
null rate watched (no `skip_null_rate`), other k and windows, no minimum change, no weekday model. And the
other side, sensitivity: per day, the smallest share of raw.flights' rows whose loss `anomaly_volume` flags,
with and without the weekday model.

    python benchmarks/bench_monitors.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIRST, LAST, JUDGED_FROM = "2013-01-01", "2013-03-31", "2013-01-15"


def build(home: Path) -> float:
    """The quarter, through the real CLI (one range run); returns its wall time."""
    env = {**os.environ, "PROVLINE_HOME": str(home)}
    env.pop("DAGSTER_HOME", None)
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "--start", FIRST, "--end", LAST],
                         cwd=home.parent, env=env, capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"the run failed:\n{run.stdout}{run.stderr[-5000:]}")
    return time.perf_counter() - start


def fired_in_runs(home: Path) -> list[tuple]:
    import duckdb

    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(
            """SELECT asset, partition, check_name, message FROM quality.check_results
               WHERE check_name LIKE 'anomaly_%' AND NOT passed AND partition >= ? ORDER BY partition, asset""",
            [JUDGED_FROM],
        ).fetchall()


def rule_alarms(home: Path) -> tuple[set[tuple], set[tuple], list[tuple]]:
    """The contract checks (`contract`, `quarantine`, `warnings`: the rules per Dagster check) that failed on
    2013-01-15..2013-03-31: (asset, partition, check) as run — with the rules' thresholds and acknowledgements — and
    as each rule's raw verdict (any failing row) would have it; and the failing rules as run."""
    import duckdb

    from pipelines.definitions import catalog

    check_of = {(spec.table, rule.name): rule.check for spec in catalog for rule in spec.rules}
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        rows = con.execute(
            """SELECT asset, partition, check_name, passed, failing_rows, message FROM quality.check_results
               WHERE check_name NOT LIKE 'anomaly_%' AND partition >= ?
               QUALIFY recorded_at = max(recorded_at) OVER (PARTITION BY asset, partition)""", [JUDGED_FROM],
        ).fetchall()
    as_run = {(a, p, check_of[(a, r)]) for a, p, r, passed, _, _ in rows if passed is False}
    raw = {(a, p, check_of[(a, r)]) for a, p, r, passed, failing, _ in rows if passed is False or failing}
    failing = sorted((p, a, r, f, m) for a, p, r, passed, f, m in rows if passed is False)
    return as_run, raw, failing


def per_month(fired: list[tuple]) -> dict[str, int]:
    return dict(sorted(Counter(partition[:7] for _, partition, *_ in fired).items()))


def offline(home: Path, *, all_nulls: bool, k: float | None = None, window: int | None = None,
            min_change: bool = True, weekly: bool = True, means: dict[str, list[str]] | None = None) -> list[tuple]:
    """The monitors' verdicts recomputed from the warehouse's tables under other settings."""
    import duckdb

    from pipelines.definitions import catalog
    from pipelines.monitor import anomaly

    saved, weekly_share = dict(anomaly.MIN_CHANGE), anomaly.WEEKLY_SHARE
    if not min_change:
        anomaly.MIN_CHANGE.update(dict.fromkeys(saved, 0.0))
    if not weekly:
        anomaly.WEEKLY_SHARE = 0.0
    fired = []
    try:
        with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
            for spec in catalog:
                if not spec.partitioned:
                    continue
                config = anomaly.config_of(spec.contract, spec.columns)
                config = replace(config, k=k or config.k, window=window or config.window)
                metrics = anomaly.metrics_of(spec)
                if all_nulls:
                    metrics += [anomaly.Metric(anomaly.NULL_RATE, c) for c in config.skip_null_rate]
                metrics += [anomaly.Metric(anomaly.MEAN, c) for c in (means or {}).get(spec.table, [])]
                days = [r[0] for r in con.execute(
                    "SELECT DISTINCT partition FROM provline.version_log WHERE asset = ? ORDER BY 1",
                    [spec.table]).fetchall()]
                stats = anomaly.compute_stats(con, spec, metrics, days)
                judged = anomaly.judge(stats, [d for d in days if d >= JUDGED_FROM], metrics, config)
                for day, found in judged.items():
                    for check, group in anomaly.by_check(found).items():
                        failed = [f for f in group if f.anomalous]
                        if failed:
                            fired.append((spec.table, day, check, "; ".join(f.describe() for f in failed)))
    finally:
        anomaly.MIN_CHANGE.update(saved)
        anomaly.WEEKLY_SHARE = weekly_share
    return fired


def smallest_detected_cut(home: Path, weekly: bool) -> dict[str, float]:
    """Per judged day, the smallest share of its flights that, lost, puts its volume under the expected range."""
    import duckdb

    from pipelines.monitor import anomaly

    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        counts = con.execute("SELECT partition, row_count FROM provline.version_log WHERE asset = 'raw.flights' "
                             "ORDER BY partition").fetchall()
    saved, anomaly.WEEKLY_SHARE = anomaly.WEEKLY_SHARE, anomaly.WEEKLY_SHARE if weekly else 0.0
    try:
        cuts = {}
        for i, (day, rows) in enumerate(counts):
            if day >= JUDGED_FROM:
                found = anomaly.expected([(d, float(n)) for d, n in counts[:i]], day, anomaly.VOLUME,
                                         anomaly.MonitorConfig())
                cuts[day] = max(0.0, 1 - found.low / rows)
    finally:
        anomaly.WEEKLY_SHARE = saved
    return cuts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", help="reuse a warehouse built by an earlier run (skips the build)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    scratch = Path(tempfile.mkdtemp(prefix="provline-bench-monitors-"))
    try:
        home = Path(args.home) if args.home else scratch / "provline"
        load = os.getloadavg()[0]
        if not args.home:
            seconds = build(home)
            print(f"built {FIRST}..{LAST} in {seconds:.0f} s (load1 at start {load:.2f})")
        fired = fired_in_runs(home)
        print(f"\nin the runs (defaults + the flights contracts' settings): {len(fired)} alarm(s), "
              f"per month {per_month(fired)}")
        for row in fired:
            print("  ", *row)
        as_run, raw, failing = rule_alarms(home)
        print(f"\ncontract checks failed (asset x day x check, of {JUDGED_FROM}..{LAST}): {len(as_run)} as run, "
              f"{len(raw)} by the rules' raw verdicts (no thresholds, no acknowledgements); per month as run "
              f"{per_month([(a, p) for a, p, _ in as_run])}, raw {per_month([(a, p) for a, p, _ in raw])}")
        for row in failing:
            print("  ", *row)
        print("\noffline, the same statistics judged under other settings (alarms per month):")
        print("| setting | 2013-01 (15-31) | 2013-02 | 2013-03 | total |")
        print("|---|---:|---:|---:|---:|")
        variants = {
            "as run: k=3, window 14, weekday-aware, minimum change, contracts' exemptions": {},
            "every column's null rate watched (no skip_null_rate)": {"all_nulls": True},
            "no minimum change (k·σ alone)": {"min_change": False},
            "no weekday model": {"weekly": False},
            "no weekday model, no minimum change": {"weekly": False, "min_change": False},
            "k=2": {"k": 2}, "k=4": {"k": 4}, "window 7": {"window": 7}, "window 28": {"window": 28},
            "dep_delay's mean also watched (raw.flights, marts.flight_facts)":
                {"means": {"raw.flights": ["dep_delay"], "marts.flight_facts": ["dep_delay"]}},
        }
        for label, options in variants.items():
            counts = per_month(offline(home, **{"all_nulls": False, **options}))
            months = [counts.get(m, 0) for m in ("2013-01", "2013-02", "2013-03")]
            print(f"| {label} | {' | '.join(map(str, months))} | {sum(months)} |")
        print("\nsensitivity: the smallest loss of a day's raw.flights rows that anomaly_volume flags")
        for weekly in (True, False):
            cuts = sorted(smallest_detected_cut(home, weekly).values())
            print(f"  weekday model {'on' if weekly else 'off'}: median {cuts[len(cuts) // 2]:.0%}, "
                  f"worst {cuts[-1]:.0%}, best {cuts[0]:.0%} over {len(cuts)} days")
        print("\nevery column watched, what fires:")
        for row in offline(home, all_nulls=True):
            print("  ", *row[:3])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
