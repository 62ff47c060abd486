"""`provline contract check --against REF`: the contracts of the working tree against those at a git ref.

Both sides are exported to ODCS by this provline: the ref's assets/ and checks/ are taken out with
`git archive` and exported in a subprocess that finds them first on its path (so a ref from before contracts
were exported is compared all the same). Then, per table:
- breaking: a table or column removed, a required column added, a type narrowed (anything but a widening:
  INTEGER -> BIGINT -> DOUBLE, DATE -> TIMESTAMP, any -> VARCHAR), a rule tightened (a column made
  required or unique, a range or length narrowed, allowed values removed, a blocking or quarantining rule
  added or changed, a rule's behaviour made stricter: warn < quarantine < blocking), the primary key changed;
- not breaking: a table or an optional column added, a type widened, a rule loosened or removed, a warn rule
  added or changed, descriptions.
Breaking changes fail the check unless the table's contract version raised its major part (semver).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from pipelines.contracts.odcs import export_all

WIDENINGS = {("TINYINT", "SMALLINT"), ("TINYINT", "INTEGER"), ("TINYINT", "BIGINT"), ("SMALLINT", "INTEGER"),
             ("SMALLINT", "BIGINT"), ("INTEGER", "BIGINT"), ("INTEGER", "DOUBLE"), ("BIGINT", "DOUBLE"),
             ("SMALLINT", "DOUBLE"), ("FLOAT", "DOUBLE"), ("DATE", "TIMESTAMP")}
STRICTNESS = {"warn": 0, "quarantine": 1, "blocking": 2}
_LOWER_BOUNDS = ("minimum", "exclusiveMinimum", "minLength")
_UPPER_BOUNDS = ("maximum", "exclusiveMaximum", "maxLength")
TREE = ("assets", "checks")
"""What a ref contributes: the domains and their contracts (the runtime that exports them is this one)."""


@dataclass(frozen=True)
class Change:
    table: str
    what: str
    breaking: bool


@dataclass
class Verdict:
    changes: list[Change]
    versions: dict[str, tuple[str | None, str | None]]
    """table -> (version at the ref, version now)."""

    def unexcused(self) -> list[Change]:
        """The breaking changes of tables whose contract version did not raise its major part."""
        return [c for c in self.changes if c.breaking and not _major_raised(*self.versions.get(c.table, (None, None)))]


def _major_raised(before: str | None, after: str | None) -> bool:
    try:
        return int(str(after).split(".")[0]) > int(str(before).split(".")[0])
    except ValueError:
        return False


def compare(before: dict[str, dict], after: dict[str, dict]) -> Verdict:
    """Two sets of ODCS documents, table -> document."""
    changes = [Change(t, "table removed", True) for t in before if t not in after]
    changes += [Change(t, "table added", False) for t in after if t not in before]
    for table in (t for t in after if t in before):
        changes += _table_changes(table, before[table], after[table])
    versions = {t: (before.get(t, {}).get("version"), after.get(t, {}).get("version")) for t in {*before, *after}}
    return Verdict(changes, versions)


def _properties(document: dict) -> dict[str, dict]:
    return {p["name"]: p for obj in document.get("schema") or [] for p in obj.get("properties") or []}


def _rules(document: dict) -> dict[str, dict]:
    rules = {}
    for obj in document.get("schema") or []:
        for owner in [obj, *(obj.get("properties") or [])]:
            for rule in owner.get("quality") or []:
                rules[str(rule.get("id") or rule.get("name"))] = rule
    return rules


def _behaviour(rule: dict) -> str:
    return next((p["value"] for p in rule.get("customProperties") or [] if p.get("property") == "behaviour"),
                "blocking" if rule.get("severity", "error") == "error" else "warn")


def _table_changes(table: str, before: dict, after: dict) -> list[Change]:
    out: list[Change] = []

    def change(what: str, breaking: bool) -> None:
        out.append(Change(table, what, breaking))

    old, new = _properties(before), _properties(after)
    for name in old.keys() - new.keys():
        change(f"column {name} removed", True)
    for name in new.keys() - old.keys():
        required = bool(new[name].get("required"))
        change(f"{'required' if required else 'optional'} column {name} added", required)
    for name in (n for n in new if n in old):
        _column_changes(name, old[name], new[name], change)
    if _key(old) != _key(new):
        change(f"primary key {_key(old)} -> {_key(new)}", True)
    old_rules, new_rules = _rules(before), _rules(after)
    for name in old_rules.keys() - new_rules.keys():
        change(f"rule {name} removed", False)
    for name in new_rules.keys() - old_rules.keys():
        behaviour = _behaviour(new_rules[name])
        change(f"rule {name} added ({behaviour})", behaviour != "warn")
    for name in (n for n in new_rules if n in old_rules):
        was, now = _behaviour(old_rules[name]), _behaviour(new_rules[name])
        if was != now:
            change(f"rule {name}: {was} -> {now}", STRICTNESS.get(now, 2) > STRICTNESS.get(was, 2))
        elif _definition(old_rules[name]) != _definition(new_rules[name]):
            change(f"rule {name} changed ({now})", now != "warn")
    return out


def _key(properties: dict[str, dict]) -> list[str]:
    """The primary key's columns, in order."""
    return [n for _, n in sorted((p.get("primaryKeyPosition", 0), n) for n, p in properties.items()
                                 if p.get("primaryKey"))]


def _allowed(prop: dict) -> set[str] | None:
    """A property's allowed values (its invalidValues rule's validValues), or None."""
    for rule in prop.get("quality") or []:
        if rule.get("metric") == "invalidValues" and "validValues" in (rule.get("arguments") or {}):
            return set(map(str, rule["arguments"]["validValues"]))
    return None


def _definition(rule: dict) -> dict:
    return {k: v for k, v in rule.items() if k not in ("description", "name", "customProperties")} | {
        "rowCheck": next((p["value"] for p in rule.get("customProperties") or [] if p.get("property") == "rowCheck"),
                         None)}


def _column_changes(name: str, old: dict, new: dict, change) -> None:
    was, now = str(old.get("physicalType", "")).upper(), str(new.get("physicalType", "")).upper()
    if was != now:
        widened = (was, now) in WIDENINGS or now == "VARCHAR"
        change(f"column {name} type {was} -> {now} ({'widened' if widened else 'narrowed'})", not widened)
    for flag in ("required", "unique"):
        if bool(old.get(flag)) != bool(new.get(flag)):
            tightened = bool(new.get(flag))
            change(f"column {name} {'made' if tightened else 'no longer'} {flag}", tightened)
    a, b = old.get("logicalTypeOptions") or {}, new.get("logicalTypeOptions") or {}
    for key in sorted(a.keys() | b.keys()):
        if a.get(key) == b.get(key):
            continue
        if key in _LOWER_BOUNDS:
            tightened = key not in a or (key in b and b[key] > a[key])
        elif key in _UPPER_BOUNDS:
            tightened = key not in a or (key in b and b[key] < a[key])
        else:
            tightened = True  # a pattern or format changed: cannot tell
        change(f"column {name} {key} {a.get(key)} -> {b.get(key)} ({'tightened' if tightened else 'loosened'})",
               tightened)
    if (old_values := _allowed(old)) is not None and (new_values := _allowed(new)) is not None:
        if removed := sorted(old_values - new_values):
            change(f"column {name} no longer allows {removed}", True)


# --- both sides, exported ------------------------------------------------------------------------------


def at_ref(repo: Path, ref: str, scratch: Path) -> dict[str, dict]:
    """The contracts of the assets/ and checks/ at `ref` of the git repository `repo`, exported by this provline."""
    archive = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", ref, *TREE],
                             capture_output=True, timeout=60)
    if archive.returncode != 0:
        raise ValueError(f"git archive {ref} in {repo}: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(scratch, filter="data")
    return exported_in(scratch)


def exported_in(tree: Path) -> dict[str, dict]:
    """Every contract of the domains in `tree` (a folder holding assets/ and checks/), exported in a subprocess
    that imports them from there (`python -m` puts its working directory first on the path)."""
    out = tree / ".provline-contracts.json"
    done = subprocess.run([sys.executable, "-m", "pipelines.contracts.changes", str(out)], cwd=tree,
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise ValueError(f"the contracts in {tree} could not be exported:\n{done.stderr.strip()[-2000:]}")
    try:
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


if __name__ == "__main__":  # the subprocess of `exported_in`
    import assets  # the tree's own: the working directory comes first on the path
    from pipelines.domain import domains_in

    domains = domains_in(assets)
    Path(sys.argv[1]).write_text(json.dumps(dict(export_all(domains))))
