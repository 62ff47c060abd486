"""The lineage-audit side of `provline`: handlers and their argparse wiring (pipelines/cli.py calls
`add_lineage_commands`). Query commands first ingest what was appended to the JSONL lineage log since last
time (cheap: byte offsets)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from pipelines.audit import queries
from pipelines.audit.store import IngestError, LineageStore

REPRODUCED = "reproduced"  # the verdict `provline verify` exits 0 on


def _store(args: argparse.Namespace) -> LineageStore:
    store = LineageStore()
    if not getattr(args, "no_ingest", False):
        try:
            result = store.ingest_file()
            if result.added:
                print(f"ingested {result}", file=sys.stderr)
        except IngestError as error:
            print(f"warning: the lineage log was not ingested (answering from the store as it is): {error}",
                  file=sys.stderr)
    return store


def _as_of(args: argparse.Namespace):
    return queries.parse_time(getattr(args, "as_of", None))


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _print_json(value) -> None:
    print(json.dumps(value, indent=2, default=str))


def _q(result: list[dict]) -> str:
    s = {k: sum(1 for q in result if q["result"] == k) for k in ("pass", "warn", "fail")}
    fails = [q["assertion"] for q in result if q["result"] != "pass"]
    return f"checks {s['pass']} pass, {s['warn']} warn, {s['fail']} fail" + (f" ({', '.join(fails)})" if fails else "")


def _tree_text(node: dict, indent: str = "") -> list[str]:
    run = node.get("run") or {}
    if node.get("version") is None or not run:
        lines = [f"{indent}{node['dataset']}  [{node.get('namespace')}]  {node.get('note', '')}".rstrip()]
    else:
        part = f" [{node['partition']}]" if node.get("partition") else ""
        lines = [f"{indent}{node['dataset']}{part} @ {node['version']}",
                 f"{indent}  run {run.get('run_id')} {run.get('state')} at {node.get('written_at')}, "
                 f"code {node.get('code_version')}, {node.get('row_count')} rows; {_q(node.get('quality', []))}"]
        if node.get("repeated"):
            lines[-1] += " (shown above)"
    for child in node.get("inputs", []):
        lines.extend(_tree_text(child, indent + "    "))
    return lines


def cmd_upstream(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        with store.connect() as con:
            tree = queries.upstream(con, args.dataset, partition=args.partition, version=args.version,
                                    as_of=_as_of(args), depth=args.depth)
    except queries.QueryError as error:
        return _fail(str(error))
    if args.json:
        _print_json(tree)
    else:
        print("\n".join(_tree_text(tree)))
    return 0


def cmd_downstream(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        with store.connect() as con:
            result = queries.downstream(con, args.target, as_of=_as_of(args), depth=args.depth)
    except queries.QueryError as error:
        return _fail(str(error))
    if args.json:
        _print_json(result)
    else:
        what = f"{result['dataset']}.{result['column']}" if result["column"] else result["dataset"]
        print(f"downstream of {what}: {len({e['to'] for e in result['edges']})} affected")
        for edge in result["edges"]:
            via = f"  (job {edge['job']})" if edge.get("job") else ""
            via += f"  (via {edge['via']})" if edge.get("via") else ""
            via += f"  ({edge['label']})" if edge.get("indirect") else ""
            print(f"{'  ' * edge['depth']}{edge['from']} -> {edge['to']}{via}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    store = _store(args)
    # what has ended is settled only for the present: an --as-of answer never emits
    status = _dagster_status() if args.as_of is None else None
    try:
        with store.connect() as con:
            rows = queries.runs(con, failed=args.failed, since=queries.parse_time(args.since), as_of=_as_of(args),
                                dataset=args.dataset, dagster_status=status)
    except queries.QueryError as error:
        return _fail(str(error))
    _emit_missed_terminals(rows)
    if args.json:
        _print_json(rows)
        return 0
    for r in rows:
        part = f" [{r['partition']}]" if r["partition"] else ""
        print(f"{r['started'] or '?':32} {r['state']:9} {r['job']}{part}  run {r['run_id']}")
        for a in r["failed_assertions"]:
            print(f"    {a['result'].upper():5} {a['name']}: {a['assertion']} ({a['actual']})")
        if r["error"]:
            print(f"    error: {r['error'][:200]}")
        for flag in r["flags"]:
            print(f"    ! {flag}")
    print(f"{len(rows)} run(s)")
    return 0


def _dagster_status():
    """A Dagster run's status by id, from the instance at DAGSTER_HOME (None when it is not set)."""
    from pipelines.settings import dagster_home

    if dagster_home() is None:
        return None
    import dagster as dg

    instance = dg.DagsterInstance.get()

    def status(run_id: str) -> str | None:
        run = instance.get_run_by_id(run_id)
        return run.status.value if run is not None else None

    return status


def _emit_missed_terminals(rows: list[dict]) -> None:
    """The terminal events runs missed (their process died) while their Dagster run ended: emitted once
    (the next query ingests them; a second `provline lineage runs` does not emit them again)."""
    missed = [r for r in rows if r["missed_terminal"]]
    if not missed:
        return
    from pipelines.lineage import LineageEmitter

    emitter = LineageEmitter()
    for r in missed:
        why = f"ended without its terminal event: its Dagster run {r['dagster_run_id']} had ended"
        if r["parent_run_id"]:
            emitter.missed_terminal(r["run_id"], r["job_namespace"], r["job"], r["dagster_run_id"],
                                    r["missed_terminal"], why)
        else:  # the Dagster run's own OpenLineage run: as the executor or a sensor would have
            emitter.run_finished(r["dagster_run_id"], r["job"], r["missed_terminal"], why)
    emitter.close()


def cmd_versions(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        with store.connect() as con:
            rows = queries.versions(con, args.dataset, partition=args.partition, as_of=_as_of(args))
    except queries.QueryError as error:
        return _fail(str(error))
    if args.json:
        _print_json(rows)
        return 0
    for v in rows:
        part = v["partition"] or "-"
        print(f"{v['event_time']:32} {part:10} {v['version']}  {v['row_count']} rows  run {v['run_id']}  "
              f"code {v['code_version']}")
    print(f"{len(rows)} version(s)")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    store = LineageStore()
    try:
        for path in args.files or [None]:
            print(f"{path or 'lineage log'}: {store.ingest_file(Path(path) if path else None)}")
    except IngestError as error:
        return _fail(f"nothing ingested from that file: {error}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from pipelines.audit.receiver import serve

    serve(LineageStore(), args.host, args.port, args.max_bytes)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    verdict = args.verify(args.dataset, args.partition, args.version)
    if args.json:
        _print_json(verdict.as_dict())
    else:
        print(verdict.text())
    return 0 if verdict.verdict == REPRODUCED else 1


def cmd_report(args: argparse.Namespace) -> int:
    from pipelines.audit import report

    store = _store(args)
    tree, error = None, None
    with store.connect() as con:
        try:
            tree = queries.upstream(con, args.dataset, partition=args.partition, version=args.version)
            versions = queries.versions(con, args.dataset, partition=args.partition)
            runs = queries.runs(con, dataset=args.dataset)
            columns = queries.column_lineage(con, args.dataset)
        except queries.QueryError as problem:
            return _fail(str(problem))
    if args.partition is not None:
        runs = [r for r in runs if (r["partition"] or "") == args.partition]
    verdict = None
    if not args.no_verify:
        partition = args.partition if args.partition is not None else (tree or {}).get("partition")
        verdict = args.verify(args.dataset, partition, (tree or {}).get("version")).as_dict()
    html = report.render(args.dataset, args.partition, tree, versions, runs, verdict, error, columns)
    Path(args.out).write_text(html, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


# ---- argparse wiring --------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser, as_of: bool = True) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    if as_of:
        parser.add_argument("--as-of", metavar="TIME", help="answer with events up to this ISO 8601 time only")
    parser.add_argument("--no-ingest", action="store_true", help="do not ingest the JSONL log first")


def add_lineage_commands(lineage: argparse._SubParsersAction) -> None:
    up = lineage.add_parser("upstream", help="provenance tree of a dataset version")
    up.add_argument("dataset")
    up.add_argument("--partition")
    up.add_argument("--version", help="a content hash (default: the latest)")
    up.add_argument("--depth", type=int, default=20)
    _common(up)
    up.set_defaults(func=cmd_upstream)

    down = lineage.add_parser("downstream", help="impact: what is derived from DATASET or DATASET.COLUMN")
    down.add_argument("target", metavar="DATASET[.COLUMN]")
    down.add_argument("--depth", type=int, default=20)
    _common(down)
    down.set_defaults(func=cmd_downstream)

    runs = lineage.add_parser("runs", help="runs, their states, failed assertions and integrity flags")
    runs.add_argument("--failed", action="store_true", help="only runs that failed or failed a blocking check")
    runs.add_argument("--since", metavar="TIME")
    runs.add_argument("--dataset", help="only runs that wrote this dataset")
    _common(runs)
    runs.set_defaults(func=cmd_runs)

    versions = lineage.add_parser("versions", help="version history of a dataset")
    versions.add_argument("dataset")
    versions.add_argument("--partition")
    _common(versions)
    versions.set_defaults(func=cmd_versions)

    ingest = lineage.add_parser("ingest", help="ingest JSONL event files into the lineage store")
    ingest.add_argument("files", nargs="*", help="default: PROVLINE_HOME/lineage/events.jsonl")
    ingest.set_defaults(func=cmd_ingest)

    serve = lineage.add_parser("serve", help="receive OpenLineage events over HTTP (POST /api/v1/lineage)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=5000)
    serve.add_argument("--max-bytes", type=int, default=5 * 1024 * 1024, help="largest accepted event")
    serve.set_defaults(func=cmd_serve)


def add_top_level_commands(commands: argparse._SubParsersAction, verify: Callable) -> None:
    """`verify` and `audit report`; `verify(dataset, partition, version)` re-derives a version and returns
    its verdict (pipelines/verify.py: the audit side reads the store, never the assets' code)."""
    check = commands.add_parser("verify", help="re-derive a recorded version and compare content hashes")
    check.add_argument("dataset")
    check.add_argument("--partition", help="YYYY-MM-DD (omit for unpartitioned tables)")
    check.add_argument("--version", help="a content hash (default: the latest)")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_verify, verify=verify)

    audit = commands.add_parser("audit", help="audit reports").add_subparsers(dest="audit", required=True)
    rep = audit.add_parser("report", help="one self-contained HTML audit page for a dataset")
    rep.add_argument("dataset")
    rep.add_argument("--partition")
    rep.add_argument("--version")
    rep.add_argument("--out", required=True)
    rep.add_argument("--no-verify", action="store_true", help="skip the reproducibility check")
    rep.add_argument("--no-ingest", action="store_true")
    rep.set_defaults(func=cmd_report, verify=verify)
