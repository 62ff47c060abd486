"""`provline verify`: re-derive a recorded version in a scratch warehouse and compare content hashes.

The version log records, for each version, its code version and the versions of its inputs
({"<table>": "<content hash>", "source:<file>": "<md5>"}); the warehouse keeps every committed version
(`Warehouse.read_version`: a Parquet snapshot under PROVLINE_HOME/snapshots for the DuckDB file, time
travel for DuckLake). Verify loads the recorded input versions into a scratch warehouse (a temporary
PROVLINE_HOME) under the same table names, plus the tables the contract's reference rules read (their
versions as of the write), then runs the factory's own pure path (`derive` -> `write_for` -> `commit`)
and compares the content hash with the recorded one.

Verdicts: reproduced | differs (both hashes, and what changed: an input whose snapshot no longer holds
the recorded version, or the code version) | cannot verify (why: the asset's code is gone, an input
snapshot expired or is missing, a source file changed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.derive import derive, write_for
from pipelines.quality import contract_metadata
from pipelines.sources import SourceError, source_path
from pipelines.spec import TableSpec
from pipelines.sql import UNPARTITIONED, column_ddl, partition_filter, quote
from pipelines.warehouse import VersionUnavailable, Warehouse
from pipelines.warehouse.base import LATEST_FIRST

REPRODUCED, DIFFERS, CANNOT = "reproduced", "differs", "cannot verify"


@dataclass
class Verdict:
    dataset: str
    partition: str
    version: str | None  # the recorded content hash
    verdict: str
    reproduced_hash: str | None = None
    reasons: list[str] = field(default_factory=list)
    recorded_code_version: str | None = None
    current_code_version: str | None = None
    inputs: list[dict] = field(default_factory=list)
    written_at: str | None = None
    run_id: str | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def text(self) -> str:
        head = f"{self.dataset} [{self.partition or 'unpartitioned'}] version {self.version}: {self.verdict.upper()}"
        lines = [head]
        if self.reproduced_hash:
            lines.append(f"  recorded hash  {self.version}\n  re-derived     {self.reproduced_hash}")
        if self.recorded_code_version:
            lines.append(f"  code version   recorded {self.recorded_code_version}, now {self.current_code_version}")
        for item in self.inputs:
            lines.append(f"  input {item['name']}: recorded {item['recorded']}, loaded {item.get('loaded')} "
                         f"({item['status']})")
        lines.extend(f"  - {reason}" for reason in self.reasons)
        return "\n".join(lines)


def verify(dataset: str, partition: str | None, version: str | None, *, tables: Mapping[str, TableSpec],
           warehouse: Warehouse) -> Verdict:
    """Re-derive `dataset` [partition] at `version` (default: the latest) from its recorded inputs.
    `tables`: every table's spec by name (pipelines.definitions.catalog)."""
    partition = partition or UNPARTITIONED
    verdict = Verdict(dataset, partition, version, CANNOT)
    if not warehouse.exists():
        verdict.reasons.append(f"no warehouse at {warehouse.location}")
        return verdict
    with warehouse.connect() as con:
        row = con.execute(
            f"""SELECT content_hash, code_version, input_versions, run_id, written_at FROM provline.version_log
               WHERE asset = ? AND partition = ? AND (? IS NULL OR content_hash = ?)
               ORDER BY {LATEST_FIRST} LIMIT 1""",
            [dataset, partition, version, version],
        ).fetchone()
        if row is None:
            what = f"version {version}" if version else "any version"
            verdict.reasons.append(f"the version log has no {what} of {dataset} [{partition or 'unpartitioned'}]")
            return verdict
        recorded, code_version, input_versions, run_id, written_at = row
        verdict.version, verdict.recorded_code_version, verdict.run_id = recorded, code_version, run_id
        verdict.written_at = written_at.isoformat()
        input_versions = json.loads(input_versions)
        spec = tables.get(dataset)
        if spec is None:
            verdict.reasons.append(f"code version {code_version} no longer available: no asset defines {dataset}")
            return verdict
        verdict.current_code_version = spec.code_version
        loads = plan_loads(warehouse, con, tables, spec, partition, input_versions, written_at, verdict.inputs,
                           verdict.reasons)
    if verdict.reasons:  # something needed is not available
        return verdict
    return _rederive(warehouse, tables, spec, partition, recorded, loads, verdict)


def plan_loads(warehouse: Warehouse, con, tables: Mapping[str, TableSpec], spec: TableSpec, partition: str,
               input_versions: dict[str, str], written_at, inputs: list[dict], reasons: list[str]) -> list[dict]:
    """The snapshots to load to re-derive spec [partition]: its recorded inputs + the tables its contract's rules
    read (as of the write), read on `con` (the warehouse's). What is not available is added to `reasons`, and
    the state of each recorded input to `inputs` (for `provline verify` and `provline diff`)."""
    loads = []
    for name, recorded in sorted(input_versions.items()):
        if name.startswith("source:"):
            file = name.removeprefix("source:")
            try:
                path = source_path(spec.source)
            except SourceError as error:
                reasons.append(f"source file {file} is not available: {error}")
                continue
            now = hashlib.md5(path.read_bytes()).hexdigest()
            ok = path.name == file and now == recorded
            inputs.append({"name": name, "recorded": recorded, "loaded": now,
                                   "status": "unchanged" if ok else "changed"})
            if path.name != file:
                reasons.append(f"source file changed: recorded {file}, now {path}")
            elif now != recorded:
                reasons.append(f"source file {path} changed: md5 recorded {recorded}, now {now}")
            continue
        upstream = tables.get(name)
        part = partition if upstream is not None and upstream.partitioned else UNPARTITIONED
        try:
            rows = warehouse.read_version(con, name, part, recorded, upstream.daily_on if upstream else None)
        except VersionUnavailable as gone:
            inputs.append({"name": name, "recorded": recorded, "loaded": None, "status": "missing"})
            reasons.append(f"input snapshot of {name} version {recorded} expired or missing ({gone})")
            continue
        loads.append({"name": name, "partition": part, "recorded": recorded, "rows": rows, "input": True})
    meta = contract_metadata(spec.contract)
    context = {ref.table for ref in meta.get("references", [])}
    if meta.get("row_count_matches"):
        context.add(meta["row_count_matches"])
    for name in sorted(context - set(input_versions)):
        upstream = tables.get(name)
        part = partition if upstream is not None and upstream.partitioned else UNPARTITIONED
        row = con.execute(
            """SELECT content_hash FROM provline.version_log WHERE asset = ? AND partition = ? AND written_at <= ?
               ORDER BY written_at DESC LIMIT 1""", [name, part, written_at]).fetchone()
        try:
            if row is None:
                raise VersionUnavailable("never written")
            rows = warehouse.read_version(con, name, part, row[0], upstream.daily_on if upstream else None)
        except VersionUnavailable:
            reasons.append(f"{spec.table}'s rules read {name}, whose version at {written_at} has no snapshot")
            continue
        loads.append({"name": name, "partition": part, "recorded": row[0], "rows": rows, "input": False})
    return loads


def _rederive(warehouse, tables, spec, partition, recorded, loads, verdict) -> Verdict:
    scratch = Path(tempfile.mkdtemp(prefix="provline-verify-"))
    try:
        scratch_wh = Warehouse(home=str(scratch), name=warehouse.name)
        with scratch_wh.connect() as con:
            for load in loads:
                note_loaded(load, load_snapshot(con, tables, load), verdict.inputs, verdict.reasons)
        try:
            derived = derive(spec, scratch_wh, [partition], allow_failed_upstream=True)
            receipt = scratch_wh.commit(write_for(spec, derived, f"verify:{recorded}", [partition]))[partition]
        except Exception as error:  # noqa: BLE001 - any failure to re-derive is the verdict's reason
            verdict.reasons.append(f"re-deriving failed: {type(error).__name__}: {error}")
            return verdict
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    verdict.reproduced_hash = receipt.content_hash
    code_changed = verdict.recorded_code_version != verdict.current_code_version
    if receipt.content_hash == recorded:
        verdict.verdict = REPRODUCED
        verdict.reasons = [f"same hash with today's code version {verdict.current_code_version} (recorded "
                           f"{verdict.recorded_code_version})"] if code_changed else []
        return verdict
    verdict.verdict = DIFFERS
    if code_changed:
        verdict.reasons.append(f"code version changed: recorded {verdict.recorded_code_version}, "
                               f"now {verdict.current_code_version}")
    if not verdict.reasons:
        verdict.reasons.append("same inputs and code version, different result: the transform is not deterministic")
    return verdict


def note_loaded(load: dict, loaded: str, inputs: list[dict], reasons: list[str]) -> None:
    """Record the state of a recorded input as loaded (its snapshot holds the recorded hash, or another one)."""
    if not load["input"]:
        return
    status = "unchanged" if loaded == load["recorded"] else "changed"
    inputs.append({"name": load["name"], "recorded": load["recorded"], "loaded": loaded, "status": status})
    if status == "changed":
        reasons.append(f"input {load['name']} changed: recorded {load['recorded']}, its snapshot now holds {loaded}")


def load_snapshot(con, tables: Mapping[str, TableSpec], load: dict) -> str:
    """Create the table as the factory would, fill (or refill) its partition with the version's rows, record its
    version; return its hash. `load`: one of `plan_loads`'s."""
    name, part = load["name"], load["partition"]
    upstream = tables.get(name)
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(name.split('.')[0])}")
    con.register("version_rows", load["rows"])
    if upstream is not None:
        con.execute(f"CREATE TABLE IF NOT EXISTS {quote(name)} ({column_ddl(upstream.columns)})")
        where, params = partition_filter([part], upstream.daily_on)
        con.execute(f"DELETE FROM {quote(name)} WHERE {where}", params)  # a version loaded before it
        con.execute(f"INSERT INTO {quote(name)} BY NAME SELECT * FROM version_rows")
    else:
        con.execute(f"CREATE OR REPLACE TABLE {quote(name)} AS SELECT * FROM version_rows")
    con.unregister("version_rows")
    expr = upstream.daily_on if upstream is not None else None
    loaded = Warehouse.content_hashes(con, name, [part], expr)[part]
    con.execute(
        """INSERT INTO provline.version_log (asset, partition, content_hash, code_version, input_versions, run_id,
               row_count, input_row_count, quarantined_count, columns, written_at)
           VALUES (?, ?, ?, ?, '{}', 'verify', 0, 0, 0, '[]', now())""",
        [name, part, loaded, upstream.code_version if upstream is not None else ""],
    )
    return loaded
