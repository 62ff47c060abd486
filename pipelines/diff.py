"""`provline diff`: what a code change does to the data, per partition and downstream, before it ships.

**New** is today's code re-derived on each partition's recorded input versions in a scratch warehouse, with
verify's machinery (`plan_loads` -> `load_snapshot` -> `derive` -> `write_for` -> `commit`), for a whole range
at once; **Old** is the recorded version (`Warehouse.read_version`). Per partition, cheapest first:

1. content hashes equal: *unchanged*; no row is read or compared;
2. schema: columns added, removed or retyped;
3. rows matched on the table's key: added, removed, changed (no key, or one that does not identify a row in
   both versions: compared as a multiset of rows, and said so);
4. per column: changed values and match %, mean and largest numeric difference, null rate before and after;
5. a few example rows, before and after;
6. contract verdicts that change (newly failing, newly passing rules) and quarantine counts before and after:
   from the recorded check results and the re-derivation's own validation, with no extra scan.

Steps 2-5 run in DuckDB over the scratch warehouse (the old version is scanned from Arrow beside the new rows),
set-based: one grouped pass per question, never a Python loop over rows.

A verdict per asset from the measured data: identical | additive (only new columns) | changed (values
changed, rows added or removed) | breaking (a column removed or retyped, the key changed or no longer
identifies a row, a blocking rule now fails). A warn rule whose verdict changed is listed, and fails
`--fail-on any`, but changes no data.

Downstream: the changed columns are followed through the recorded column lineage (the lineage store,
pipelines/audit) to the tables and columns that derive from them; with `downstream=True` those assets are
re-derived in dependency order on the new upstream result (it stays in the scratch warehouse) and diffed the
same way. Nothing is written to the warehouse, the version log, Dagster, OpenLineage or the lineage store: the
lineage is read from a scratch copy of the store that also ingests the event log, and every scratch file is
removed at the end.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow

from pipelines.audit import queries
from pipelines.audit.store import LineageStore
from pipelines.derive import derive, write_for
from pipelines.quality import BLOCKING, RuleResult, describe_case
from pipelines.spec import TableSpec
from pipelines.sql import PARTITION, UNPARTITIONED, partition_filter, partition_label, quote
from pipelines.verify import load_snapshot, note_loaded, plan_loads
from pipelines.warehouse import VersionUnavailable, Warehouse
from pipelines.warehouse.base import LATEST_FIRST

IDENTICAL, ADDITIVE, CHANGED, BREAKING = "identical", "additive", "changed", "breaking"
VERDICTS = (IDENTICAL, ADDITIVE, CHANGED, BREAKING)  # in order of severity
CANNOT = "cannot diff"
UNCHANGED, DIFFERENT = "unchanged", "changed"  # a partition's content hashes
FAIL_ON = ("breaking", "any")
EXAMPLES = 3  # example rows per partition and kind (changed, added, removed)
RUN_ID = "diff"  # the run id of the scratch warehouse's writes
NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
           "FLOAT", "REAL", "DOUBLE")


class DiffError(ValueError):
    """The diff cannot start as asked (no warehouse, an unknown asset, a partitioned asset without partitions)."""


@dataclass
class ColumnChange:
    column: str
    status: str  # kept | added | removed | retyped
    changed: int | None = None  # matched rows whose value differs (None: not comparable row by row)
    match_pct: float | None = None  # share of matched rows with the same value, in %
    mean_diff: float | None = None  # numeric: mean of new - old over the matched rows whose value changed
    max_diff: float | None = None  # numeric: largest |new - old|
    null_rate_old: float | None = None
    null_rate_new: float | None = None


@dataclass
class RuleChange:
    rule: str
    behaviour: str  # blocking | quarantine | warn
    old: str  # pass | fail | not recorded
    new: str  # pass | fail
    failing_rows_old: int | None
    failing_rows_new: int
    finding: str | None = None  # what fails now, in words (a table-level finding or how many rows)
    examples: list[str] = field(default_factory=list)  # failing values: column=value (row key)


@dataclass
class PartitionDiff:
    partition: str
    status: str  # unchanged | changed | cannot diff
    old_hash: str | None = None
    new_hash: str | None = None
    recorded_code_version: str | None = None
    reasons: list[str] = field(default_factory=list)
    inputs: list[dict] = field(default_factory=list)
    schema: dict = field(default_factory=lambda: {"added": [], "removed": [], "retyped": [], "reordered": False})
    rows: dict | None = None  # old, new, added, removed, changed, unchanged, matched_on (None: as a multiset)
    columns: list[ColumnChange] = field(default_factory=list)
    examples: list[dict] = field(default_factory=list)  # {kind, key, before, after}
    rules: list[RuleChange] = field(default_factory=list)
    quarantined: dict = field(default_factory=dict)  # old, new
    steps: list[str] = field(default_factory=list)  # what was computed, in order
    verdict: str | None = None
    why: list[str] = field(default_factory=list)  # what makes the verdict

    def judge(self) -> None:
        """The verdict from what was measured (see the module docstring)."""
        schema, rows = self.schema, self.rows or {}
        why = [f"column {c} removed" for c, _ in schema["removed"]]
        why += [f"column {c} retyped {old} -> {new}" for c, old, new in schema["retyped"]]
        why += [note for note in [rows.get("key_changed")] if note]
        why += [f"blocking rule {r.rule} now fails" for r in self.rules
                if r.new == "fail" and r.behaviour == BLOCKING]
        if why:
            self.verdict, self.why = BREAKING, why
            return
        changed = [f"rows {k}" if k != "changed" else "values changed" for k in ("added", "removed", "changed")
                   if rows.get(k)]
        changed += ["column order changed"] if schema["reordered"] else []
        if changed:
            self.verdict, self.why = CHANGED, changed
        elif schema["added"]:
            self.verdict, self.why = ADDITIVE, [f"column {c} {t} added" for c, t in schema["added"]]
        else:
            self.verdict, self.why = IDENTICAL, []


@dataclass
class AssetDiff:
    asset: str
    code_version: str  # today's
    why: str  # why it is diffed: named, its code changed, or downstream of a changed asset
    partitions: list[PartitionDiff] = field(default_factory=list)
    downstream: list[dict] = field(default_factory=list)  # lineage edges from its changed columns
    lineage_note: str | None = None

    @property
    def verdict(self) -> str:
        """The worst verdict of its partitions; `cannot diff` when none could be diffed."""
        found = [p.verdict for p in self.partitions if p.verdict]
        return max(found, key=VERDICTS.index) if found else CANNOT

    @property
    def complete(self) -> bool:
        return all(p.verdict for p in self.partitions)

    def summary(self) -> dict:
        """The partitions' measurements added up (a few numbers per partition, not rows): what the terminal,
        Markdown and HTML outputs show for the asset."""
        parts = self.partitions
        compared = [p.rows for p in parts if p.rows]
        rows = {k: sum(r[k] for r in compared) for k in ("old", "new", "added", "removed")}
        rows["changed"] = sum(r["changed"] for r in compared) if all(r["changed"] is not None for r in compared) \
            else None
        columns: dict[str, dict] = {}
        for part in parts:
            matched = (part.rows or {}).get("matched") or 0
            for c in part.columns:
                total = columns.setdefault(c.column, {"column": c.column, "status": c.status, "changed": None,
                                                      "matched": 0, "mean_diff": None, "max_diff": None,
                                                      "null_rate_old": None, "null_rate_new": None, "_w": []})
                if c.changed is not None:
                    total["changed"] = (total["changed"] or 0) + c.changed
                    total["matched"] += matched
                if c.max_diff is not None:
                    total["max_diff"] = max(total["max_diff"] or 0.0, c.max_diff)
                if c.mean_diff is not None:  # weighted by the values that changed
                    total["_w"].append((c.changed or 0, c.mean_diff))
                for side, n in (("old", (part.rows or {}).get("old", 0)), ("new", (part.rows or {}).get("new", 0))):
                    rate = getattr(c, f"null_rate_{side}")
                    if rate is not None:  # weighted by the partition's rows
                        total.setdefault(f"_{side}", []).append((n, rate))
        for total in columns.values():
            weights = total.pop("_w")
            if weights and sum(w for w, _ in weights):
                total["mean_diff"] = round(sum(w * m for w, m in weights) / sum(w for w, _ in weights), 6)
            for side in ("old", "new"):
                rates = total.pop(f"_{side}", [])
                if rates and sum(n for n, _ in rates):
                    total[f"null_rate_{side}"] = round(sum(n * r for n, r in rates) / sum(n for n, _ in rates), 6)
            if total["changed"] is not None and total["matched"]:
                total["match_pct"] = round(100 * (total["matched"] - total["changed"]) / total["matched"], 3)
        rules: dict[str, dict] = {}
        for part in parts:
            for r in part.rules:
                entry = rules.setdefault(r.rule, {**dataclasses.asdict(r), "partitions": [], "failing_rows_old": 0,
                                                  "failing_rows_new": 0, "examples": []})
                entry["partitions"].append(part.partition)
                entry["failing_rows_old"] += r.failing_rows_old or 0
                entry["failing_rows_new"] += r.failing_rows_new
                entry["examples"] = (entry["examples"] + r.examples)[:EXAMPLES]
        schema = {k: sorted({tuple(x) for p in parts if p.rows for x in p.schema[k]}) for k in
                  ("added", "removed", "retyped")}
        return {
            "partitions": {s: [p.partition for p in parts if p.status == s] for s in (UNCHANGED, DIFFERENT, CANNOT)},
            "rows": rows if compared else None, "schema": schema, "columns": list(columns.values()),
            "rules": list(rules.values()),
            "quarantined": {side: sum(p.quarantined.get(side) or 0 for p in parts) for side in ("old", "new")},
            "examples": [{"partition": p.partition, **e} for p in parts for e in p.examples][:2 * EXAMPLES],
            "notes": sorted({p.rows["note"] for p in parts if p.rows and p.rows["note"]}),
            "why": sorted({w for p in parts for w in p.why}),
            "recorded_code_versions": sorted({p.recorded_code_version for p in parts if p.recorded_code_version}),
        }

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "verdict": self.verdict, "complete": self.complete,
                "summary": self.summary()}


@dataclass
class DiffReport:
    partitions: list[str]
    downstream: bool
    assets: list[AssetDiff] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        found = [a.verdict for a in self.assets if a.verdict != CANNOT]
        return max(found, key=VERDICTS.index) if found else IDENTICAL

    def exit_code(self, fail_on: str | None) -> int:
        """0, or 1 when `fail_on` is met: `breaking` by a breaking asset; `any` by any verdict but identical, a
        rule whose verdict changed, or a partition that could not be diffed (a diff that cannot say "nothing
        changed" does not pass)."""
        if fail_on == "breaking":
            return int(self.verdict == BREAKING)
        if fail_on == "any":
            return int(any(a.verdict != IDENTICAL or not a.complete or any(p.rules for p in a.partitions)
                           for a in self.assets))
        return 0

    def as_dict(self) -> dict:
        return {"verdict": self.verdict, "partitions": self.partitions, "downstream": self.downstream,
                "notes": self.notes, "assets": [a.as_dict() for a in self.assets]}


# --- the diff -----------------------------------------------------------------------------------------


def diff(assets: Sequence[str] | None, partitions: Sequence[str] | None, *, tables: Mapping[str, TableSpec],
         warehouse: Warehouse, downstream: bool = False) -> DiffReport:
    """Diff today's code of `assets` (default: those whose code version differs from the latest recorded one)
    against the recorded versions of `partitions` (ignored for unpartitioned assets). `tables`: every table's
    spec by name, today's code (pipelines.definitions.catalog.specs). Reads only; see the module docstring."""
    if not warehouse.exists():
        raise DiffError(f"no warehouse at {warehouse.location}")
    days = sorted(set(partitions or []))
    unknown = [name for name in assets or [] if name not in tables]
    if unknown:
        raise DiffError(f"no asset {', '.join(unknown)}; the assets are {', '.join(sorted(tables))}")
    report = DiffReport(days, downstream)
    chosen = {name: "named" for name in assets or []} or _code_changed(warehouse, tables, days)
    if not assets and not chosen:
        report.notes.append("no asset's code version differs from its latest recorded one")
    undated = [name for name in chosen if tables[name].partitioned and not days]
    if undated:
        raise DiffError(f"{', '.join(undated)} {'is' if len(undated) == 1 else 'are'} partitioned: give --partition "
                        "or --start/--end")
    todo = {name: ([UNPARTITIONED] if not tables[name].partitioned else days) for name in chosen}
    with _scratch(warehouse, tables) as scratch:
        for spec in _in_dependency_order(tables):
            if spec.table not in todo:
                continue
            result = _diff_asset(scratch, spec, todo.pop(spec.table), chosen[spec.table])
            report.assets.append(result)
            _follow_lineage(scratch, result, tables)
            if downstream:
                _queue_downstream(result, tables, days, todo, chosen, report)
    return report


def _code_changed(warehouse: Warehouse, tables: Mapping[str, TableSpec], days: list[str]) -> dict[str, str]:
    """The assets whose latest recorded version (of the partitions asked, or the one of an unpartitioned table)
    has another code version than today's code."""
    with warehouse.connect() as con:
        rows = con.execute(
            f"""SELECT asset, list(DISTINCT code_version) FROM (
                    SELECT asset, partition, code_version FROM provline.version_log
                    WHERE partition = '' OR list_contains($days, partition)
                    QUALIFY row_number() OVER (PARTITION BY asset, partition ORDER BY {LATEST_FIRST}) = 1)
                GROUP BY asset""", {"days": days}).fetchall()
    recorded = dict(rows)
    return {name: "its code changed" for name, spec in tables.items()
            if name in recorded and set(recorded[name]) != {spec.code_version}}


def _in_dependency_order(tables: Mapping[str, TableSpec]) -> list[TableSpec]:
    """Every spec after its inputs (graphlib would do as well; the specs already name their inputs)."""
    ordered: dict[str, TableSpec] = {}

    def visit(spec: TableSpec) -> None:
        if spec.table in ordered:
            return
        for upstream in spec.inputs:
            visit(tables.get(upstream.table, upstream))
        ordered[spec.table] = spec

    for spec in tables.values():
        visit(spec)
    return [spec for name, spec in ordered.items() if name in tables]


@dataclass
class _Scratch:
    """The scratch warehouse (and lineage store) of one diff, and what it holds: per (table, partition) the
    recorded version loaded, or the new version re-derived."""

    home: Path
    warehouse: Warehouse
    tables: Mapping[str, TableSpec]
    source: Warehouse  # the real one: read only
    loaded: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)  # -> (recorded, loaded hash)
    rederived: set[tuple[str, str]] = field(default_factory=set)
    pool: ThreadPoolExecutor | None = None
    lineage: Future | None = None  # -> (the scratch lineage store, or None and why)


@contextmanager
def _scratch(warehouse: Warehouse, tables: Mapping[str, TableSpec]) -> Iterator[_Scratch]:
    home = Path(tempfile.mkdtemp(prefix="provline-diff-"))
    try:
        scratch = Warehouse(home=str(home), name=warehouse.name, memory_limit=warehouse.memory_limit)
        with ThreadPoolExecutor(max_workers=1) as pool, scratch.session():  # one connection for every step
            yield _Scratch(home, scratch, tables, warehouse, pool=pool)  # (an open and a close cost ~30 ms each)
    finally:
        shutil.rmtree(home, ignore_errors=True)


# --- one asset -----------------------------------------------------------------------------------------


def _diff_asset(scratch: _Scratch, spec: TableSpec, partitions: list[str], why: str) -> AssetDiff:
    result = AssetDiff(spec.table, spec.code_version, why)
    recorded = _read_recorded(scratch, spec, partitions)
    parts = {p: recorded[p]["diff"] for p in partitions}
    if any(part.recorded_code_version not in (None, spec.code_version) for part in parts.values()):
        _prepare_lineage(scratch)  # the code changed: the data likely did, and its lineage will be asked for
    result.partitions = [parts[p] for p in partitions]
    ready = [p for p in partitions if not parts[p].reasons]
    groups: dict[tuple, list[str]] = {}  # partitions that need the same unpartitioned input versions
    for p in ready:
        shared = tuple(sorted((lo["name"], lo["recorded"]) for lo in recorded[p]["loads"]
                              if lo["partition"] == UNPARTITIONED))
        groups.setdefault(shared, []).append(p)
    for group in groups.values():
        _rederive(scratch, spec, group, recorded)
    changed = [p for p in ready if parts[p].status == DIFFERENT]
    if changed:
        _compare(scratch, spec, changed, parts, recorded)
    for part in result.partitions:
        if part.status != CANNOT:
            part.judge()
    return result


def _read_recorded(scratch: _Scratch, spec: TableSpec, partitions: list[str]) -> dict[str, dict]:
    """Per partition, from the real warehouse (one connection): its latest version, the check results recorded
    with it, and the recorded input versions to load (verify's plan)."""
    with scratch.source.connect() as con:
        versions = con.execute(
            f"""SELECT partition, content_hash, code_version, input_versions, run_id, written_at, row_count,
                       quarantined_count, columns FROM provline.version_log
                WHERE asset = $asset AND list_contains($partitions, partition)
                QUALIFY row_number() OVER (PARTITION BY partition ORDER BY {LATEST_FIRST}) = 1""",
            {"asset": spec.table, "partitions": partitions}).fetchall()
        results = con.execute(
            f"""WITH v AS (SELECT partition, run_id, written_at FROM provline.version_log
                           WHERE asset = $asset AND list_contains($partitions, partition)
                           QUALIFY row_number() OVER (PARTITION BY partition ORDER BY {LATEST_FIRST}) = 1)
                SELECT r.partition, r.check_name, r.passed, r.failing_rows FROM quality.check_results r
                JOIN v ON r.partition = v.partition AND r.run_id = v.run_id AND r.recorded_at = v.written_at
                WHERE r.asset = $asset""",
            {"asset": spec.table, "partitions": partitions}).fetchall()
        checks: dict[str, dict[str, tuple]] = {}
        for partition, name, passed, failing in results:
            checks.setdefault(partition, {})[name] = (passed, failing)
        found = {row[0]: row for row in versions}
        recorded = {}
        for p in partitions:
            part = PartitionDiff(p, CANNOT)
            entry = {"diff": part, "loads": [], "checks": checks.get(p, {})}
            recorded[p] = entry
            if p not in found:
                part.reasons.append(f"the version log has no version of {spec.table} [{p or 'unpartitioned'}]")
                continue
            _, content_hash, code_version, inputs, _, written_at, row_count, quarantined, columns = found[p]
            part.old_hash, part.recorded_code_version = content_hash, code_version
            part.quarantined["old"] = quarantined
            entry.update(version={"content_hash": content_hash, "code_version": code_version, "row_count": row_count,
                                  "quarantined_count": quarantined, "columns": columns, "written_at": written_at})
            entry["loads"] = plan_loads(scratch.source, con, scratch.tables, spec, p, json.loads(inputs),
                                        written_at, part.inputs, part.reasons)
    return recorded


def _rederive(scratch: _Scratch, spec: TableSpec, partitions: list[str], recorded: dict[str, dict]) -> None:
    """Load the recorded inputs of `partitions` (those not re-derived already: downstream reads the new
    upstream), record the old version as each partition's previous one (so volume and drift judge the new rows
    as a replacement of it), then derive -> write_for -> commit, the factory's own path."""
    with scratch.warehouse.connect() as con:
        for p in partitions:
            part = recorded[p]["diff"]
            for load in recorded[p]["loads"]:
                key = (load["name"], load["partition"])
                if key in scratch.rederived:
                    if load["input"]:
                        part.inputs.append({"name": load["name"], "recorded": load["recorded"],
                                            "loaded": None, "status": "re-derived (new upstream)"})
                    continue
                if scratch.loaded.get(key, (None,))[0] != load["recorded"]:
                    scratch.loaded[key] = (load["recorded"], load_snapshot(con, scratch.tables, load))
                note_loaded(load, scratch.loaded[key][1], part.inputs, part.reasons)
        versions = [recorded[p]["version"] for p in partitions]
        con.register("diff_previous", pyarrow.table({
            "partition": partitions, **{k: [v[k] for v in versions] for k in (
                "content_hash", "code_version", "row_count", "quarantined_count", "columns")}}))
        con.execute(
            """INSERT INTO provline.version_log BY NAME
               SELECT *, $asset AS asset, '{}' AS input_versions, 'diff:recorded' AS run_id,
                      row_count + quarantined_count AS input_row_count, now() - INTERVAL 1 SECOND AS written_at
               FROM diff_previous""", {"asset": spec.table})
        con.unregister("diff_previous")
    ready = [p for p in partitions if not recorded[p]["diff"].reasons]
    if not ready:
        return
    try:
        derived = derive(spec, scratch.warehouse, ready, allow_failed_upstream=True)
        receipts = scratch.warehouse.commit(write_for(spec, derived, RUN_ID, ready))
    except Exception as error:  # noqa: BLE001 - any failure to re-derive is the partitions' reason
        for p in ready:
            recorded[p]["diff"].reasons.append(f"re-deriving {spec.table} failed: {type(error).__name__}: {error}")
        return
    for p in ready:
        part = recorded[p]["diff"]
        scratch.rederived.add((spec.table, p))
        part.new_hash = receipts[p].content_hash
        part.status = UNCHANGED if part.new_hash == part.old_hash else DIFFERENT
        part.steps = ["re-derived", "hash"]
        part.quarantined["new"] = receipts[p].quarantined_count
        part.rules = _rule_changes(derived.validation.results[p], recorded[p]["checks"])
        part.steps.append("contract")


def _rule_changes(new: list[RuleResult], old: dict[str, tuple]) -> list[RuleChange]:
    """The contract's rules whose verdict differs from the one recorded with the old version."""
    changes = []
    for result in new:
        passed, failing = old.get(result.rule.name, (None, None))
        now = "pass" if result.passed else "fail"
        before = "not recorded" if passed is None else "pass" if passed else "fail"
        if now != before and not (passed is None and result.passed):
            changes.append(RuleChange(
                result.rule.name, result.rule.behaviour, before, now, failing, result.failing_rows,
                None if result.passed else result.finding(), [describe_case(c) for c in result.sample]))
    return changes


# --- comparing the rows ------------------------------------------------------------------------------------


def _compare(scratch: _Scratch, spec: TableSpec, partitions: list[str], parts: dict[str, PartitionDiff],
             recorded: dict[str, dict]) -> None:
    """Steps 2-5 for the partitions whose hashes differ, grouped by the old version's columns."""
    _prepare_lineage(scratch)
    old_rows: dict[str, pyarrow.Table] = {}
    with scratch.source.connect() as con:
        for p in partitions:
            try:
                old_rows[p] = scratch.source.read_version(con, spec.table, p, parts[p].old_hash, spec.daily_on)
            except VersionUnavailable as gone:
                parts[p].status = CANNOT
                parts[p].reasons.append(f"the recorded version {parts[p].old_hash} of {spec.table} "
                                        f"[{p or 'unpartitioned'}] is no longer kept ({gone})")
    by_schema: dict[str, list[str]] = {}
    for p in old_rows:
        by_schema.setdefault(recorded[p]["version"]["columns"], []).append(p)
    for columns, group in by_schema.items():
        old = pyarrow.concat_tables([old_rows[p].append_column(PARTITION, pyarrow.array([p] * old_rows[p].num_rows,
                                                                                           pyarrow.string()))
                                     for p in group])
        _compare_group(scratch, spec, group, parts, dict(json.loads(columns)), old)


def _compare_group(scratch: _Scratch, spec: TableSpec, partitions: list[str], parts: dict[str, PartitionDiff],
                   old_columns: dict[str, str], old: pyarrow.Table) -> None:
    new_columns = spec.columns
    common = [c for c in new_columns if c in old_columns]
    retyped = [c for c in common if old_columns[c] != new_columns[c]]
    schema = {"added": [[c, t] for c, t in new_columns.items() if c not in old_columns],
              "removed": [[c, t] for c, t in old_columns.items() if c not in new_columns],
              "retyped": [[c, old_columns[c], new_columns[c]] for c in retyped],
              "reordered": [c for c in old_columns if c in new_columns] != common}
    where, params = partition_filter(partitions, spec.daily_on)
    label = partition_label(spec.daily_on) if spec.partitioned else "''"
    key = list(spec.key_columns)
    key_problem = None
    if [c for c in key if c not in common or c in retyped]:
        key_problem = (f"the key ({', '.join(key)}) changed: "
                       + ", ".join(f"{c} {'retyped' if c in retyped else 'not in both versions'}"
                                   for c in key if c not in common or c in retyped))
    with scratch.warehouse.connect() as con:
        con.register("diff_old_rows", old)
        con.execute(f"""CREATE TEMP TABLE diff_new_rows AS SELECT *, {label} AS {quote(PARTITION)}
                        FROM {quote(spec.table)} WHERE {where}""", params)
        sides = {side: _side_stats(con, f"diff_{side}_rows", cols, key if not key_problem else [])
                 for side, cols in (("old", old_columns), ("new", new_columns))}
        unique = not key_problem and key and all(
            stats["rows"] == stats["keys"] for side in sides.values() for stats in side.values())
        if key and not key_problem and not unique:
            newly = [p for p in partitions if sides["new"].get(p, {}).get("rows", 0)
                     != sides["new"].get(p, {}).get("keys", 0)
                     and sides["old"].get(p, {}).get("rows", 0) == sides["old"].get(p, {}).get("keys", 0)]
            if newly:
                key_problem = f"the key ({', '.join(key)}) no longer identifies a row"
        if unique:
            rows, changes, examples = _keyed(con, key, common, retyped, old_columns, new_columns)
        else:
            rows, changes, examples = _multiset(con, common, retyped)
        con.unregister("diff_old_rows")
        con.execute("DROP TABLE diff_new_rows")
    for p in partitions:
        part = parts[p]
        part.schema = schema
        old_side, new_side = sides["old"].get(p, {"rows": 0}), sides["new"].get(p, {"rows": 0})
        part.rows = {"old": old_side["rows"], "new": new_side["rows"], **rows.get(p, _no_rows(unique)),
                     "matched_on": key if unique else None,
                     "note": None if unique else _multiset_note(key, key_problem),
                     "key_changed": key_problem}
        part.columns = _columns(p, new_columns, old_columns, retyped, changes.get(p, {}), old_side, new_side, rows)
        part.examples = examples.get(p, [])
        part.steps += ["schema", "rows", "columns", "examples"]


def _no_rows(keyed: bool) -> dict:
    return {"added": 0, "removed": 0, "changed": 0 if keyed else None, "unchanged": 0}


def _multiset_note(key: list[str], problem: str | None) -> str:
    if not key:
        return "the table declares no key: compared as a multiset of rows (a changed row counts as removed + added)"
    return f"{problem or 'the key does not identify a row in both versions'}: compared as a multiset of rows"


def _side_stats(con, relation: str, columns: dict[str, str], key: list[str]) -> dict[str, dict]:
    """Per partition of one side: its rows, distinct keys, and each column's nulls (one grouped scan)."""
    names = list(columns)
    keys = f"count(DISTINCT ROW({', '.join(quote(k) for k in key)}))" if key else "count(*)"
    nulls = "".join(f", count(*) - count({quote(c)})" for c in names)
    found = con.execute(f"SELECT {quote(PARTITION)}, count(*), {keys}{nulls} FROM {relation} "
                        f"GROUP BY {quote(PARTITION)}").fetchall()
    return {p: {"rows": rows, "keys": distinct, "nulls": dict(zip(names, counts, strict=True))}
            for p, rows, distinct, *counts in found}


def _value(column: str, retyped: list[str], side: str) -> str:
    """A column of one side as compared: as text when it was retyped (the two types need not compare)."""
    ref = f"{side}.{quote(column)}"
    return f"CAST({ref} AS VARCHAR)" if column in retyped else ref


def _keyed(con, key: list[str], common: list[str], retyped: list[str], old_columns: dict[str, str],
           new_columns: dict[str, str]) -> tuple[dict, dict, dict]:
    """Rows matched on the key (a full outer join per partition): counts, per-column changes, examples."""
    on = " AND ".join([f"n.{quote(PARTITION)} = o.{quote(PARTITION)}"]
                      + [f"n.{quote(k)} IS NOT DISTINCT FROM o.{quote(k)}" for k in key])
    pairs = ", ".join(f"{_value(c, retyped, 'n')} AS n{i}, {_value(c, retyped, 'o')} AS o{i}"
                      for i, c in enumerate(common))
    keys = ", ".join(f"coalesce(n.{quote(k)}, o.{quote(k)}) AS k{i}" for i, k in enumerate(key))
    con.execute(f"""CREATE TEMP TABLE diff_pairs AS
                    SELECT coalesce(n.{quote(PARTITION)}, o.{quote(PARTITION)}) AS p,
                           n.{quote(PARTITION)} IS NOT NULL AS in_new, o.{quote(PARTITION)} IS NOT NULL AS in_old,
                           {keys}, {pairs}
                    FROM diff_new_rows n FULL OUTER JOIN diff_old_rows o ON {on}""")
    differs = [f"n{i} IS DISTINCT FROM o{i}" for i in range(len(common))]
    numeric = [i for i, c in enumerate(common) if c not in retyped and _is_numeric(new_columns[c])
               and _is_numeric(old_columns[c])]
    both = "in_new AND in_old"
    measures = [f"count(*) FILTER (WHERE {both} AND {d})" for d in differs]
    measures += [f"avg(n{i} - o{i}) FILTER (WHERE {both} AND {differs[i]}), "
                 f"max(abs(n{i} - o{i})) FILTER (WHERE {both})" for i in numeric]
    any_differs = " OR ".join(differs) or "FALSE"
    found = con.execute(
        f"""SELECT p, count(*) FILTER (WHERE in_new AND NOT in_old), count(*) FILTER (WHERE in_old AND NOT in_new),
                   count(*) FILTER (WHERE {both} AND ({any_differs})), count(*) FILTER (WHERE {both})
                   {''.join(', ' + m for m in measures)}
            FROM diff_pairs GROUP BY p""").fetchall()
    rows, changes = {}, {}
    for p, added, removed, changed, matched, *measured in found:
        rows[p] = {"added": added, "removed": removed, "changed": changed, "unchanged": matched - changed,
                   "matched": matched}
        per = {c: {"changed": measured[i]} for i, c in enumerate(common)}
        for j, i in enumerate(numeric):
            mean, largest = measured[len(common) + 2 * j: len(common) + 2 * j + 2]
            per[common[i]].update(mean_diff=_number(mean), max_diff=_number(largest))
        changes[p] = per
    examples: dict[str, list[dict]] = {}
    for p, kind, key_values, new_values, old_values in con.execute(
            f"""SELECT p, kind, [{', '.join(f'CAST(k{i} AS VARCHAR)' for i in range(len(key)))}],
                       [{', '.join(f'CAST(n{i} AS VARCHAR)' for i in range(len(common)))}],
                       [{', '.join(f'CAST(o{i} AS VARCHAR)' for i in range(len(common)))}]
                FROM (SELECT *, CASE WHEN NOT in_old THEN 'added' WHEN NOT in_new THEN 'removed' ELSE 'changed' END
                             AS kind FROM diff_pairs WHERE NOT ({both}) OR {any_differs})
                QUALIFY row_number() OVER (PARTITION BY p, kind ORDER BY {', '.join(f'k{i}' for i in range(len(key)))})
                        <= {EXAMPLES}
                ORDER BY p, kind, {', '.join(f'k{i}' for i in range(len(key)))}""").fetchall():
        shown = [i for i in range(len(common)) if common[i] not in key  # (the key is shown once, as the key)
                 and (kind != "changed" or new_values[i] != old_values[i])]
        examples.setdefault(p, []).append({
            "kind": kind, "key": dict(zip(key, key_values, strict=True)),
            "before": None if kind == "added" else {common[i]: old_values[i] for i in shown},
            "after": None if kind == "removed" else {common[i]: new_values[i] for i in shown}})
    con.execute("DROP TABLE diff_pairs")
    return rows, changes, examples


def _multiset(con, common: list[str], retyped: list[str]) -> tuple[dict, dict, dict]:
    """Rows compared as a multiset (on the columns both versions have): how many copies of each row each side
    holds, per partition."""
    row = "md5(CAST(ROW(" + ", ".join(f"CAST({quote(c)} AS VARCHAR)" if c in retyped else quote(c)
                                       for c in common) + ") AS VARCHAR))"
    part = quote(PARTITION)
    con.execute(f"""CREATE TEMP TABLE diff_copies AS
                    WITH n AS (SELECT {part} AS p, {row} AS h, count(*) AS c FROM diff_new_rows GROUP BY ALL),
                         o AS (SELECT {part} AS p, {row} AS h, count(*) AS c FROM diff_old_rows GROUP BY ALL)
                    SELECT coalesce(n.p, o.p) AS p, coalesce(n.h, o.h) AS h, coalesce(n.c, 0) AS new,
                           coalesce(o.c, 0) AS old
                    FROM n FULL OUTER JOIN o ON n.p = o.p AND n.h = o.h""")
    rows = {p: {"added": added, "removed": removed, "changed": None, "unchanged": same}
            for p, added, removed, same in con.execute(
                """SELECT p, sum(greatest(new - old, 0)), sum(greatest(old - new, 0)), sum(least(new, old))
                   FROM diff_copies GROUP BY p""").fetchall()}
    examples: dict[str, list[dict]] = {}
    values = "[" + ", ".join(f"CAST({quote(c)} AS VARCHAR)" for c in common) + "]"
    for kind, relation, surplus in (("added", "diff_new_rows", "new > old"), ("removed", "diff_old_rows",
                                                                              "old > new")):
        for p, shown in con.execute(
                f"""SELECT {part}, {values} FROM {relation}
                    WHERE ({part}, {row}) IN (SELECT (p, h) FROM diff_copies WHERE {surplus})
                    QUALIFY row_number() OVER (PARTITION BY {part} ORDER BY {row}) <= {EXAMPLES}""").fetchall():
            shown_row = dict(zip(common, shown, strict=True))
            examples.setdefault(p, []).append({"kind": kind, "key": {}, "before": shown_row if kind == "removed"
                                               else None, "after": shown_row if kind == "added" else None})
    con.execute("DROP TABLE diff_copies")
    return rows, {}, examples


def _columns(p: str, new_columns: dict[str, str], old_columns: dict[str, str], retyped: list[str], changes: dict,
             old_side: dict, new_side: dict, rows: dict) -> list[ColumnChange]:
    """Each column's change in one partition: only the columns that changed in some way."""
    matched = rows.get(p, {}).get("matched")
    out = []
    for column in dict.fromkeys([*new_columns, *old_columns]):
        status = ("added" if column not in old_columns else "removed" if column not in new_columns
                  else "retyped" if column in retyped else "kept")
        before = _rate(old_side.get("nulls", {}).get(column), old_side["rows"]) if status != "added" else None
        after = _rate(new_side.get("nulls", {}).get(column), new_side["rows"]) if status != "removed" else None
        measured = changes.get(column, {})
        change = ColumnChange(column, status, measured.get("changed"), None, measured.get("mean_diff"),
                              measured.get("max_diff"), before, after)
        if change.changed is not None and matched:
            change.match_pct = round(100 * (matched - change.changed) / matched, 3)
        if status != "kept" or change.changed or before != after:
            out.append(change)
    return out


def _rate(nulls: int | None, rows: int) -> float | None:
    return None if nulls is None or not rows else round(nulls / rows, 6)


def _is_numeric(sql_type: str) -> bool:
    return sql_type.upper() in NUMERIC or sql_type.upper().startswith("DECIMAL")


def _number(value) -> float | None:
    return None if value is None else round(float(value), 6)


# --- downstream ---------------------------------------------------------------------------------------------


def _changed_columns(result: AssetDiff) -> tuple[set[str], bool]:
    """The columns whose values changed in some partition, and whether rows were added or removed (then every
    reader of the table is affected, whatever columns it reads)."""
    columns, rows_moved = set(), False
    for part in result.partitions:
        if part.status != DIFFERENT:
            continue
        columns |= {c.column for c in part.columns if c.status != "kept" or c.changed}
        rows = part.rows or {}
        rows_moved |= bool(rows.get("added") or rows.get("removed"))
    return columns, rows_moved


def _prepare_lineage(scratch: _Scratch) -> None:
    """Start making the scratch lineage store, in the background (once per diff, when something changed: its
    ingest then overlaps the comparison of the rows)."""
    if scratch.lineage is None:
        scratch.lineage = scratch.pool.submit(_lineage_copy, scratch.home / "lineage.duckdb")


def _lineage_copy(path: Path) -> tuple[LineageStore | None, str | None]:
    """A copy of the lineage store that has also ingested the rest of the event log: the recorded column
    lineage, complete, without a write to the real store."""
    real, copy = LineageStore(), LineageStore(path=path)
    try:
        for suffix in ("", ".wal"):
            found = Path(str(real.path) + suffix)
            if found.exists():
                shutil.copyfile(found, Path(str(copy.path) + suffix))
        copy.ingest_file()
    except Exception as error:  # noqa: BLE001 - the listing says what went wrong; the diff itself goes on
        return None, f"the recorded column lineage could not be read: {type(error).__name__}: {error}"
    return copy, None


def _store(scratch: _Scratch) -> tuple[LineageStore | None, str | None]:
    _prepare_lineage(scratch)
    return scratch.lineage.result()


def _follow_lineage(scratch: _Scratch, result: AssetDiff, tables: Mapping[str, TableSpec]) -> None:
    """List what derives from the changed columns, through the recorded column lineage (all levels)."""
    columns, rows_moved = _changed_columns(result)
    if not columns and not rows_moved:
        return
    store, problem = _store(scratch)
    targets = [result.asset] if rows_moved else [f"{result.asset}.{c}" for c in sorted(columns)]
    edges: dict[tuple, dict] = {}
    unknown = []
    if store is not None:
        with store.connect() as con:
            for target in targets:
                try:
                    found = queries.downstream(con, target)["edges"]
                except queries.QueryError:
                    unknown.append(target)
                    continue
                for edge in found:
                    edges.setdefault((edge["from"], edge["to"]), edge)
    result.downstream = sorted(edges.values(), key=lambda e: (e["depth"], e["from"], e["to"]))
    readers = sorted(s.table for s in tables.values() if any(i.table == result.asset for i in s.inputs))
    if store is None or (unknown and not edges):
        result.lineage_note = (problem or "no recorded column lineage of "
                               + ", ".join(unknown)) + (f"; its readers in the code: {', '.join(readers)}"
                                                        if readers else "")
        result.downstream += [{"depth": 1, "from": result.asset, "to": r, "indirect": True,
                               "label": "reads the table (from the code: no recorded lineage)"} for r in readers]
    elif unknown:
        result.lineage_note = "not in the recorded column lineage: " + ", ".join(unknown)


def _downstream_tables(result: AssetDiff, tables: Mapping[str, TableSpec]) -> list[str]:
    """The assets that read the changed columns directly (level 1 of the lineage): each is re-derived and
    diffed in turn, so the ripple goes on only where something changed."""
    found = []
    for edge in result.downstream:
        if edge["depth"] != 1:
            continue
        parts = edge["to"].split(".")
        name = next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in tables), None)
        if name is not None and name != result.asset and name not in found:
            found.append(name)
    return found


def _queue_downstream(result: AssetDiff, tables: Mapping[str, TableSpec], days: list[str], todo: dict,
                      chosen: dict, report: DiffReport) -> None:
    """Queue the direct readers of what changed, for the partitions where it changed."""
    changed = [p.partition for p in result.partitions if p.status == DIFFERENT]
    if not changed:
        return
    for name in _downstream_tables(result, tables):
        spec = tables[name]
        if not spec.partitioned:
            parts = [UNPARTITIONED]
        elif changed != [UNPARTITIONED]:
            parts = changed
        elif days:
            parts = days
        else:
            report.notes.append(f"{name} reads {result.asset} but is partitioned: give --partition or "
                                "--start/--end to re-derive it")
            continue
        todo[name] = sorted(set(todo.get(name, [])) | set(parts))
        chosen.setdefault(name, f"downstream of {result.asset}")

