"""`provline contract export|import|check` (pipelines/cli.py adds them)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

# the handlers import what they use: every other `provline` command builds this parser too


def cmd_export(args: argparse.Namespace) -> int:
    from pipelines.contracts import contract_file, dump
    from pipelines.contracts.odcs import export_all
    from pipelines.contracts.validate import schema_problems
    from pipelines.definitions import domains
    from pipelines.warehouse import Warehouse

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        documents = list(export_all(domains, args.tables or None, Warehouse.from_settings()))
    except KeyError as error:
        raise SystemExit(str(error.args[0])) from None
    for table, document in documents:
        if problems := schema_problems(document):  # never write a document the standard refuses
            raise SystemExit(f"{table}: the exported contract breaks the ODCS schema:\n  " + "\n  ".join(problems))
        path = contract_file(out, table)
        path.write_text(dump(document))
        print(f"{path}  ({table}, version {document['version']})")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from pipelines.contracts import load
    from pipelines.contracts.importer import import_contract

    path = Path(args.file)
    try:
        imported = import_contract(load(path), args.table, origin=path.name)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    if args.out:
        Path(args.out).write_text(imported.source)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(imported.source)
    for item in imported.untranslated:
        print(f"not translated: {item}", file=sys.stderr)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from pipelines.contracts.changes import at_ref, compare, exported_in

    repo = Path(args.repo).resolve()
    try:
        with tempfile.TemporaryDirectory(prefix="provline-contracts-") as scratch:
            verdict = compare(at_ref(repo, args.against, Path(scratch)), exported_in(repo))
    except ValueError as error:
        raise SystemExit(str(error)) from None
    unexcused = verdict.unexcused()
    for change in verdict.changes:
        was, now = verdict.versions.get(change.table, (None, None))
        label = ("BREAKING" if change in unexcused else "breaking (version bumped)") if change.breaking else "ok"
        print(f"{label:26} {change.table}: {change.what}  [{was} -> {now}]")
    if not verdict.changes:
        print(f"no contract changed since {args.against}")
    if unexcused:
        tables = sorted({c.table for c in unexcused})
        print(f"{len(unexcused)} breaking change(s) in {', '.join(tables)}: raise the major part of "
              'Config.metadata["version"] of each, or undo them', file=sys.stderr)
        return 1
    return 0


def add_contract_commands(commands: argparse._SubParsersAction) -> None:
    contract = commands.add_parser("contract", help="data contracts as ODCS documents (export, import, check)") \
        .add_subparsers(dest="contract", required=True)
    export = contract.add_parser("export", help="one ODCS v3.1.0 YAML document per table")
    export.add_argument("tables", nargs="*", metavar="TABLE", help="e.g. staging.weather (default: every table)")
    export.add_argument("--out", default="contracts", help="the folder to write to (default: ./contracts)")
    export.set_defaults(func=cmd_export)

    into = contract.add_parser("import", help="the pandera contract of a new table from an ODCS document")
    into.add_argument("file", metavar="FILE.yaml")
    into.add_argument("--table", required=True, help="schema.name of the table the contract is for")
    into.add_argument("--out", help="write the contract here (default: standard output)")
    into.set_defaults(func=cmd_import)

    check = contract.add_parser("check", help="breaking changes of the contracts against a git ref")
    check.add_argument("--against", required=True, metavar="REF", help="a git ref, e.g. origin/main")
    check.add_argument("--repo", default=".", help="the git work tree holding assets/ and checks/ (default: .)")
    check.set_defaults(func=cmd_check)
