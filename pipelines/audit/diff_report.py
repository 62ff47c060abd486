"""What `provline diff` prints: a terminal summary, Markdown ready to paste into a pull request, and one
self-contained HTML page with the audit report's look (templates/diff.html, jinja2 with autoescape on).

Each renders the diff's JSON form (pipelines/diff.py `DiffReport.as_dict()`), as report.py renders verify's
verdict: the audit side reads a result, never the assets' code. The asset sections (tables of columns, rules,
examples, downstream) are arranged once (`sections`) and drawn by both Markdown and HTML.
"""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import Environment, PackageLoader, StrictUndefined

_TEMPLATES = Environment(loader=PackageLoader("pipelines.audit"), autoescape=True, undefined=StrictUndefined,
                         trim_blocks=True, lstrip_blocks=True)
CLASS = {"identical": "pass", "additive": "pass", "changed": "warn", "breaking": "fail", "cannot diff": "fail"}


@dataclass(frozen=True)
class Section:
    title: str
    headers: list[str]
    rows: list[list[str]]


def _n(value, digits: int = 3) -> str:
    """A number as shown: integers as they are, others rounded; nothing as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}".rstrip("0").rstrip(".") if value == value else "NaN"
    return str(value)


def _pct(rate) -> str:
    return "" if rate is None else f"{100 * rate:.1f}%"


def _part(partition: str) -> str:
    return partition or "unpartitioned"


def _values(values: dict | None) -> str:
    return "" if values is None else ", ".join(f"{k}={'NULL' if v is None else v}" for k, v in values.items())


def _rows_line(rows: dict | None) -> str:
    if not rows:
        return "not compared"
    changed = "" if rows["changed"] is None else f", {rows['changed']} changed"
    return f"{rows['old']} -> {rows['new']}: {rows['added']} added, {rows['removed']} removed{changed}"


def _code(asset: dict) -> str:
    recorded = ", ".join(asset["summary"]["recorded_code_versions"]) or "none"
    return f"{asset['why']}; code version {recorded} recorded, {asset['code_version']} now"


def sections(asset: dict) -> list[Section]:
    """The tables that detail one asset's diff (only those with rows)."""
    s = asset["summary"]
    found = [
        Section("Partitions", ["partition", "hashes", "verdict", "rows", "why"],
                [[_part(p["partition"]), p["status"], p["verdict"] or "cannot diff", _rows_line(p["rows"]),
                  "; ".join(p["why"] or p["reasons"])]
                 for p in asset["partitions"] if p["status"] != "unchanged" or p["why"]]),
        Section("Schema", ["change", "column", "type"],
                [["added", c, t] for c, t in s["schema"]["added"]]
                + [["removed", c, t] for c, t in s["schema"]["removed"]]
                + [["retyped", c, f"{old} -> {new}"] for c, old, new in s["schema"]["retyped"]]),
        Section("Columns", ["column", "status", "values changed", "match %", "mean diff", "max diff",
                            "null rate before", "null rate after"],
                [[c["column"], c["status"], _n(c["changed"]), _n(c.get("match_pct")), _n(c["mean_diff"]),
                  _n(c["max_diff"]), _pct(c["null_rate_old"]), _pct(c["null_rate_new"])] for c in s["columns"]]),
        Section("Contract verdicts that change", ["rule", "behaviour", "before", "after", "failing rows before",
                                                  "failing rows after", "partitions", "e.g."],
                [[r["rule"], r["behaviour"], r["old"], r["new"], _n(r["failing_rows_old"]), _n(r["failing_rows_new"]),
                  ", ".join(map(_part, r["partitions"])), "; ".join(r["examples"]) or (r["finding"] or "")]
                 for r in s["rules"]]),
        Section("Example rows", ["partition", "row", "key", "before", "after"],
                [[_part(e["partition"]), e["kind"], _values(e["key"]), _values(e["before"]), _values(e["after"])]
                 for e in s["examples"]]),
        Section("Downstream (recorded column lineage)", ["level", "from", "to", "how"],
                [[str(e["depth"]), e["from"], e["to"], e.get("label", "")] for e in asset["downstream"]]),
        Section("Not diffed", ["partition", "why"],
                [[_part(p["partition"]), "; ".join(p["reasons"])] for p in asset["partitions"] if p["reasons"]]),
    ]
    return [section for section in found if section.rows]


# --- terminal -----------------------------------------------------------------------------------------------


def text(report: dict) -> str:
    lines = [_heading(report)]
    for asset in report["assets"]:
        s = asset["summary"]
        parts = s["partitions"]
        lines.append(f"{asset['asset']}: {asset['verdict'].upper()}  ({_code(asset)})")
        counts = ", ".join(f"{len(v)} {k}" for k, v in parts.items() if v)
        lines.append(f"  partitions: {counts}" + (f"; {'; '.join(s['why'])}" if s["why"] else ""))
        if s["rows"]:
            matched = next((p["rows"]["matched_on"] for p in asset["partitions"] if p["rows"]), None)
            how = f", matched on {', '.join(matched)}" if matched else ""
            lines.append(f"  rows: {_rows_line(s['rows'])}{how}")
        lines += [f"  note: {note}" for note in s["notes"]]
        for kind, change in (("added", "+"), ("removed", "-")):
            lines += [f"  {change} column {c} {t} ({kind})" for c, t in s["schema"][kind]]
        lines += [f"  ~ column {c} retyped {old} -> {new}" for c, old, new in s["schema"]["retyped"]]
        for c in s["columns"]:
            if c["changed"]:
                measured = f", mean diff {_n(c['mean_diff'])}, max diff {_n(c['max_diff'])}" \
                    if c["max_diff"] is not None else ""
                lines.append(f"  {c['column']}: {c['changed']} value(s) changed ({_n(c['match_pct'])}% match"
                             f"{measured})")
            if c["null_rate_old"] != c["null_rate_new"] and c["status"] == "kept":
                lines.append(f"  {c['column']}: null rate {_pct(c['null_rate_old'])} -> {_pct(c['null_rate_new'])}")
        for r in s["rules"]:
            what = "newly failing" if r["new"] == "fail" else "newly passing"
            lines.append(f"  rule {r['rule']} ({r['behaviour']}) {what}: {r['failing_rows_old'] or 0} -> "
                         f"{r['failing_rows_new']} failing row(s) in {', '.join(map(_part, r['partitions']))}")
            lines += [f"      e.g. {example}" for example in r["examples"]]
        if s["quarantined"]["old"] != s["quarantined"]["new"]:
            lines.append(f"  quarantined rows: {s['quarantined']['old']} -> {s['quarantined']['new']}")
        for e in s["examples"]:
            shown = (f"{_values(e['before'])} -> {_values(e['after'])}" if e["kind"] == "changed"
                     else _values(e["before"] or e["after"]))
            key = f" {_values(e['key'])}" if e["key"] else ""
            lines.append(f"  e.g. {e['kind']} [{_part(e['partition'])}]{key}: {shown}")
        for p in asset["partitions"]:
            if p["reasons"]:
                lines.append(f"  not diffed [{_part(p['partition'])}]: {'; '.join(p['reasons'])}")
        if asset["downstream"]:
            lines.append("  downstream (recorded column lineage):")
            lines += [f"    {'  ' * (e['depth'] - 1)}{e['from']} -> {e['to']} ({e.get('label', '')})"
                      for e in asset["downstream"]]
        elif parts["changed"]:
            lines.append("  downstream: nothing recorded reads the changed columns")
        if asset["lineage_note"]:
            lines.append(f"  note: {asset['lineage_note']}")
    lines += [f"note: {note}" for note in report["notes"]]
    lines.append(f"verdict: {report['verdict']}")
    return "\n".join(lines)


def _heading(report: dict) -> str:
    days = report["partitions"]
    span = "" if not days else days[0] if len(days) == 1 else f"{days[0]}..{days[-1]} ({len(days)} days)"
    downstream = "; downstream re-derived" if report["downstream"] else ""
    return f"provline diff {span}: {len(report['assets'])} asset(s){downstream}".replace("  ", " ")


# --- Markdown ----------------------------------------------------------------------------------------------


def _cell(value: str) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
            *("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows)]


def markdown(report: dict) -> str:
    lines = [f"### {_heading(report)}: **{report['verdict']}**", ""]
    lines += _md_table(["asset", "verdict", "partitions", "rows before → after", "added", "removed", "changed",
                        "why"],
                       [[f"`{a['asset']}`", f"**{a['verdict']}**",
                         ", ".join(f"{len(v)} {k}" for k, v in a["summary"]["partitions"].items() if v),
                         *(_row_cells(a["summary"]["rows"])), "; ".join(a["summary"]["why"])]
                        for a in report["assets"]])
    for asset in report["assets"]:
        lines += ["", f"#### `{asset['asset']}`: {asset['verdict']}", "", f"_{_code(asset)}_"]
        lines += ["", *(f"> {note}" for note in asset["summary"]["notes"])] if asset["summary"]["notes"] else []
        for section in sections(asset):
            lines += ["", f"**{section.title}**", "", *_md_table(section.headers, section.rows)]
        if asset["lineage_note"]:
            lines += ["", f"> {asset['lineage_note']}"]
    lines += ["", *(f"> {note}" for note in report["notes"])] if report["notes"] else []
    return "\n".join(lines) + "\n"


def _row_cells(rows: dict | None) -> list[str]:
    if not rows:
        return ["", "", "", ""]
    return [f"{rows['old']} → {rows['new']}", str(rows["added"]), str(rows["removed"]), _n(rows["changed"])]


# --- HTML ---------------------------------------------------------------------------------------------------


def html(report: dict) -> str:
    assets = [{**a, "class": CLASS[a["verdict"]], "sections": sections(a), "code": _code(a),
               "rows": _row_cells(a["summary"]["rows"])} for a in report["assets"]]
    return _TEMPLATES.get_template("diff.html").render(
        title=_heading(report), verdict=report["verdict"], verdict_class=CLASS[report["verdict"]], assets=assets,
        notes=report["notes"])
