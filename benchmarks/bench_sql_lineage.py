"""Benchmark of issue 8 (item 6): SQL column lineage, sqlglot against openlineage-sql + regex.

Both implementations of `pipelines/lineage/sql_lineage.py` answer every case of
tests/lineage/test_sql_lineage.py (the real asset SQL in its single-day and range forms included):

  right         cases whose answer equals the test's expectation (fields and dataset-level indirect)
  lines         the module's lines; code lines leave out blank lines, comments and docstrings
  import        importing the module (and its engine) in a fresh process that has DuckDB loaded, median
                over --processes
  first call    the first call in that process (flight_facts.sql), same processes
  uncached      one call with the cache bypassed in a warm process, median over the six asset SQL cases
  cached        one `sql_lineage` call once cached

The old implementation is read from git at OLD_REF and needs openlineage-sql, no longer a dependency:

    pip install "openlineage-sql>=1.54,<2"
    python benchmarks/bench_sql_lineage.py --repeat 200 --processes 10
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tokenize
from importlib.metadata import version
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
OLD_REF = "cdbff1f333fe7bfd8efb98d0a5cfbe39390ed4ba"  # the last commit with openlineage-sql + regex
MODULE = "pipelines/lineage/sql_lineage.py"
NAMES = {"old": "openlineage-sql + regex", "new": "sqlglot"}


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def code_lines(source: str) -> int:
    """Lines holding code: not blank, not only a comment, not part of a docstring."""
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef) and ast.get_docstring(node):
            first = node.body[0]
            docstrings.update(range(first.lineno, first.end_lineno + 1))
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return len({tok.start[0] for tok in tokens if tok.type not in skip} - docstrings)


def is_right(module: ModuleType, case, schemas: dict[str, list[str]]) -> bool:
    lineage = module.sql_lineage(case.sql, schemas, list(case.fields))
    fields = {column: sorted(map(tuple, sources)) for column, sources in lineage.fields.items()}
    expected = {column: sorted(sources) for column, sources in case.fields.items()}
    return fields == expected and sorted(map(tuple, lineage.indirect)) == sorted(case.indirect)


def median_call(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def uncached_s(module: ModuleType, cases: list, schemas: dict[str, list[str]], repeat: int) -> float:
    """Median over the cases of one call's median time, the cache bypassed."""
    key = tuple((name, tuple(columns)) for name, columns in schemas.items())
    calls = [lambda c=case: module._sql_lineage.__wrapped__(c.sql, key, tuple(c.fields)) for case in cases]
    return statistics.median(median_call(call, repeat) for call in calls)


def cached_s(module: ModuleType, case, schemas: dict[str, list[str]], repeat: int) -> float:
    module.sql_lineage(case.sql, schemas, list(case.fields))
    return median_call(lambda: module.sql_lineage(case.sql, schemas, list(case.fields)), repeat)


def child(path: str, name: str) -> None:
    """In a fresh process: import the module, then its first call (the job comes on stdin)."""
    import duckdb  # noqa: F401 - every provline process has DuckDB loaded (the warehouse)

    import pipelines.lineage.model  # noqa: F401 - both modules need it; not part of the engine's cost

    job = json.load(sys.stdin)
    start = time.perf_counter()
    module = load(Path(path), name)
    imported = time.perf_counter()
    module.sql_lineage(job["sql"], job["schemas"], job["outputs"])
    print(json.dumps({"import": imported - start, "first": time.perf_counter() - imported}))


def fresh_process(path: Path, name: str, job: dict) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(path), name],
        input=json.dumps(job), capture_output=True, text=True, check=True, cwd=REPO,
    )  # fmt: skip
    return json.loads(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=200, help="calls per timing")
    parser.add_argument("--processes", type=int, default=10, help="fresh processes per implementation")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0

    sys.path.insert(0, str(REPO / "tests" / "lineage"))
    import test_sql_lineage as tests  # the cases and their expected answers

    with tempfile.TemporaryDirectory() as tmp:
        old_path = Path(tmp) / "old_sql_lineage.py"
        old_path.write_text(subprocess.run(["git", "show", f"{OLD_REF}:{MODULE}"], cwd=REPO, capture_output=True,
                                           text=True, check=True).stdout)  # fmt: skip
        paths = {"old": old_path, "new": REPO / MODULE}
        print(f"load1 at start {os.getloadavg()[0]:.2f}; python {sys.version.split()[0]}, sqlglot {version('sqlglot')},"
              f" openlineage-sql {version('openlineage-sql')}")  # fmt: skip
        modules = {key: load(path, f"{key}_sql_lineage") for key, path in paths.items()}
        results: dict[str, dict[str, float | str]] = {key: {} for key in paths}

        for key, module in modules.items():
            wrong = [name for name, case in tests.CASES.items() if not is_right(module, case, tests.SCHEMAS)]
            results[key]["right"] = f"{len(tests.CASES) - len(wrong)} / {len(tests.CASES)}"
            print(f"{NAMES[key]} wrong on: {', '.join(wrong) or '-'}")
            source = paths[key].read_text()
            results[key]["lines"] = f"{len(source.splitlines())} ({code_lines(source)} code)"

        flight_facts = tests.CASES["flight_facts_day"]
        job = {"sql": flight_facts.sql, "schemas": tests.SCHEMAS, "outputs": list(flight_facts.fields)}
        runs: dict[str, list[dict[str, float]]] = {key: [] for key in paths}
        for _ in range(args.processes):  # alternate, so both see the same machine load
            for key, path in paths.items():
                runs[key].append(fresh_process(path, f"{key}_sql_lineage", job))

        assets = [case for name, case in tests.CASES.items() if name.endswith(("_day", "_range"))]
        for key, module in modules.items():
            results[key]["import"] = statistics.median(r["import"] for r in runs[key]) * 1e3
            results[key]["first"] = statistics.median(r["first"] for r in runs[key]) * 1e3
            results[key]["uncached"] = uncached_s(module, assets, tests.SCHEMAS, args.repeat) * 1e3
            results[key]["cached"] = cached_s(module, flight_facts, tests.SCHEMAS, args.repeat) * 1e6

    rows = [("right answers (test cases)", "right", ""), ("module lines", "lines", ""),
            ("import, fresh process", "import", "ms"), ("first call, fresh process", "first", "ms"),
            ("uncached call, warm process", "uncached", "ms"), ("cached call", "cached", "µs")]  # fmt: skip
    print(f"\n| | {NAMES['old']} | {NAMES['new']} | ratio old/new |\n|---|---:|---:|---:|")
    for label, key, unit in rows:
        old, new = results["old"][key], results["new"][key]
        if unit:
            print(f"| {label}, {unit} | {old:.2f} | {new:.2f} | {old / new:.2f} |")
        else:
            print(f"| {label} | {old} | {new} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
