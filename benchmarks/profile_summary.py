"""Where a provline run's time goes, from a py-spy profile in its raw (collapsed stacks) format.

    py-spy record --rate 10 --format raw -o run.raw -- provline run --start 2013-01-01 --end 2013-12-31
    python benchmarks/profile_summary.py run.raw

Each sample is put in the category of the deepest frame of its stack that one matches (a function of provline's,
an import, Dagster's own code), the first category in the order below where one frame matches several, so the
shares add up to 100%. Prints a markdown table.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

# (category, frame pattern), most specific first: a frame is "function (file:line)"
CATEGORIES = [
    ("read a source file (parse, type, cut to the days)", r"\(pipelines/sources\.py"),
    ("pandas transform (the domain's function)", r"^_call \(pipelines/derive\.py|\(assets/"),
    ("validation: contract as SQL (one scan)", r"failure_cases_sql|_pandera_fallback"),
    ("validation: coercion, counting, quarantine split", r"^validate \(pipelines/quality/validate\.py"),
    ("partition labels of the rows", r"_with_partitions|partition_keys"),
    ("SQL transform and input reads (warehouse)", r"^derive \(pipelines/derive\.py|_read_inputs"),
    ("commit: insert, hashes, quarantine, version log", r"write_partitions|record_check_results"),
    ("commit: Parquet snapshots for verify", r"_snapshot \(pipelines/warehouse"),
    ("anomaly monitors and alerts", r"\(pipelines/monitor/"),
    ("OpenLineage: statistics", r"partition_stats"),
    ("OpenLineage: events (build, serialize, write)", r"\(pipelines/lineage/|\(openlineage/"),
    ("Dagster metadata and previews", r"^_metadata \(pipelines/factory\.py|previews"),
    ("imports and start-up", r"^<module> |importlib"),
    ("Dagster: events, checks, materializations (its own cost)", r"\(dagster/"),
]


def summarize(raw: Path) -> list[tuple[str, int]]:
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        frames = stack.split(";")
        category = next((name for frame in reversed(frames) for name, pattern in CATEGORIES
                         if re.search(pattern, frame)), "other")
        counts[category] += int(samples)
    return counts.most_common()


def main(argv: list[str]) -> int:
    rows = summarize(Path(argv[0]))
    total = sum(n for _, n in rows)
    print("| where | samples | share |\n|---|---:|---:|")
    for name, n in rows:
        print(f"| {name} | {n} | {n / total:.1%} |")
    print(f"| all | {total} | 100% |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
