"""`provline audit report`: one self-contained HTML page (no external assets) for one dataset:
the provenance graph as inline SVG (layered by depth), the versions, the runs (each OpenLineage run
beside its Dagster run), the quality results of the version audited, and the reproducibility verdict.

The page is templates/report.html, rendered by jinja2 with autoescape on: every value is escaped. This
module only arranges the data (table rows, graph coordinates)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from jinja2 import Environment, PackageLoader, StrictUndefined

NODE_W, NODE_H, COL_GAP, ROW_GAP = 230, 46, 70, 14
PATH_PARTS = 3  # a long path shows its file name and parent folders, up to this many parts
# a node's colour in the graph, and the legend's
FILLS = {"pass": "#e6f4ea", "warn": "#fff4d6", "fail": "#fde2e2", "none": "#eeeeee"}
LEGEND = [("pass", "pass", "every check passed"),
          ("warn", "warn", "a warn or quarantine rule failed; the version was written"),
          ("fail", "fail", "a blocking rule failed"), ("none", "no checks", "a source or an external dataset")]
BLOCKS = {"error": "blocking", "warn": "no (warn or quarantine)"}
_TEMPLATES = Environment(loader=PackageLoader("pipelines.audit"), autoescape=True, undefined=StrictUndefined,
                         trim_blocks=True, lstrip_blocks=True)


@dataclass(frozen=True)
class Table:
    headers: list[str] | None  # None: key/value rows, no header row
    rows: list[list]  # a cell is a value, or a _cell()
    classes: list[str | None] | None = None  # one CSS class (or None) per row


def _text(value) -> str:
    return "" if value is None else str(value)


def _short(value, n: int = 12) -> str:
    text = _text(value)
    return text if len(text) <= n else text[:n] + "…"


def _short_path(name: str) -> str:
    """An absolute path as its last PATH_PARTS parts after an ellipsis; other names as they are."""
    parts = PurePosixPath(name).parts
    return "…/" + "/".join(parts[-PATH_PARTS:]) if name.startswith("/") and len(parts) > PATH_PARTS + 1 else name


def _cell(text: str, title: str | None = None, cls: str | None = None) -> dict:
    return {"text": text, "title": title, "class": cls}


def _dataset_cell(name: str) -> dict:
    short = _short_path(name)
    return _cell(short, title=name if short != name else None)


def _status(node: dict) -> str:
    summary = node.get("quality_summary") or {}
    return next((s for s in ("fail", "warn", "pass") if summary.get(s)), "none")


def _flatten(tree: dict) -> tuple[list[dict], list[tuple[str, str]]]:
    nodes: dict[str, dict] = {}
    edges: list[tuple[str, str]] = []

    def visit(node: dict, depth: int) -> str:
        key = f"{node.get('namespace')}|{node['dataset']}|{node.get('version')}|{node.get('partition')}"
        if key not in nodes or nodes[key]["depth"] < depth:
            nodes[key] = {**node, "depth": depth, "key": key}
        for child in node.get("inputs", []):
            edges.append((visit(child, depth + 1), key))
        return key

    visit(tree, 0)
    return list(nodes.values()), sorted(set(edges))


def graph(tree: dict) -> dict:
    """The SVG's geometry: size, edges (x1, y1, x2, y2) and nodes (position, fill, texts)."""
    nodes, edges = _flatten(tree)
    layers: dict[int, list[dict]] = {}
    for node in sorted(nodes, key=lambda n: n["dataset"]):
        layers.setdefault(node["depth"], []).append(node)
    max_depth = max(layers)
    pos = {}
    for depth, layer in layers.items():
        x = (max_depth - depth) * (NODE_W + COL_GAP) + 10  # sources on the left, the audited version on the right
        for i, node in enumerate(layer):
            pos[node["key"]] = (x, 10 + i * (NODE_H + ROW_GAP))
    boxes = []
    for node in nodes:
        label = _short_path(node["dataset"])
        version = f"v {_short(node['version'])}" if node.get("version") else "no version recorded"
        boxes.append({
            **dict(zip(("x", "y"), pos[node["key"]], strict=True)), "fill": FILLS[_status(node)],
            "title": f"{node['dataset']} {_text(node.get('version'))}".strip(),
            "label": label if len(label) <= 34 else "…" + label[-33:],
            "detail": version + (f" · {node['partition']}" if node.get("partition") else ""),
        })
    return {
        "width": (max_depth + 1) * (NODE_W + COL_GAP) + 20,
        "height": max(len(layer) for layer in layers.values()) * (NODE_H + ROW_GAP) + 20,
        "node_w": NODE_W, "node_h": NODE_H,
        "edges": [(pos[s][0] + NODE_W, pos[s][1] + NODE_H / 2, pos[d][0], pos[d][1] + NODE_H / 2) for s, d in edges],
        "nodes": boxes,
    }


WHOLE_TABLE = "(the whole table: joins, filters)"
COLUMN_ROW, COLUMN_W, COLUMN_GAP = 20, 300, 220


def column_graph(edges: list[dict]) -> dict:
    """The column-lineage SVG's geometry: the input columns (grouped by their dataset) on the left, the output
    columns on the right, a line for each dependency (solid: the value comes from it; dashed: a condition);
    input columns that shape the whole table (join keys, filters) lead to one box of their own."""
    inputs = sorted({(e["input"], e["input_column"]) for e in edges})
    outputs = list(dict.fromkeys(e["column"] or WHOLE_TABLE for e in sorted(edges, key=lambda e: e["column"] is None)))
    left = {item: 10 + i * COLUMN_ROW for i, item in enumerate(inputs)}
    right = {column: 10 + i * COLUMN_ROW for i, column in enumerate(outputs)}
    x2 = 10 + COLUMN_W + COLUMN_GAP
    return {
        "width": x2 + COLUMN_W + 10, "height": max(len(inputs), len(outputs)) * COLUMN_ROW + 20,
        "row": COLUMN_ROW - 4, "box_w": COLUMN_W, "x1": 10, "x2": x2,
        "inputs": [{"y": y, "label": f"{dataset}.{column}"} for (dataset, column), y in left.items()],
        "outputs": [{"y": y, "label": column} for column, y in right.items()],
        "edges": [{"x1": 10 + COLUMN_W, "y1": left[(e["input"], e["input_column"])] + COLUMN_ROW / 2 - 2,
                   "x2": x2, "y2": right[e["column"] or WHOLE_TABLE] + COLUMN_ROW / 2 - 2,
                   "dashed": e["type"] != "DIRECT",
                   "title": f"{e['input']}.{e['input_column']} -> {e['column'] or WHOLE_TABLE}: {e['type']}"
                            + (f" ({e['subtype']})" if e["subtype"] else "")} for e in edges],
    }


def _column_rows(edges: list[dict]) -> list[list]:
    by_column: dict[str, list[str]] = {}
    for e in edges:
        how = e["type"].lower() + (f" {e['subtype'].lower()}" if e["subtype"] else "")
        by_column.setdefault(e["column"] or WHOLE_TABLE, []).append(f"{e['input']}.{e['input_column']} ({how})")
    return [[column, ", ".join(sources)] for column, sources in by_column.items()]


def _quality_cell(node: dict) -> dict | str:
    s = node.get("quality_summary")
    if not s:
        return node.get("note", "")
    failed = sorted(q["assertion"] for q in node.get("quality", []) if q["result"] != "pass")
    text = f"{s['pass']} pass / {s['warn']} warn / {s['fail']} fail" + (f": {', '.join(failed)}" if failed else "")
    return _cell(text, cls=_status(node))


def _provenance_rows(tree: dict) -> list[list]:
    nodes, _ = _flatten(tree)
    rows = []
    for n in sorted(nodes, key=lambda n: (n["depth"], n["dataset"])):
        run = n.get("run") or {}
        rows.append([n["depth"], _dataset_cell(n["dataset"]), n.get("partition"), n.get("version"), run.get("job"),
                     run.get("run_id"), run.get("dagster_run_id"), run.get("state"), n.get("code_version"),
                     _quality_cell(n)])
    return rows


def render(dataset: str, partition: str | None, tree: dict | None, versions: list[dict], runs: list[dict],
           verdict: dict | None, error: str | None = None, column_lineage: list[dict] | None = None) -> str:
    tables: dict[str, Table] = {}
    if column_lineage:
        tables["columns"] = Table(["column", "comes from (input column, how)"], _column_rows(column_lineage))
    if verdict:
        tables["verdict"] = Table(None, [
            ["version (recorded)", verdict.get("version")],
            ["re-derived hash", verdict.get("reproduced_hash")],
            ["code version recorded / now",
             f"{verdict.get('recorded_code_version')} / {verdict.get('current_code_version')}"]])
        tables["inputs"] = Table(["input", "recorded", "loaded", "status"],
                                 [[i["name"], i["recorded"], i.get("loaded"), i["status"]]
                                  for i in verdict.get("inputs", [])])
    if tree:
        tables["provenance"] = Table(["depth", "dataset", "partition", "version", "job", "run", "Dagster run",
                                      "state", "code version", "quality"], _provenance_rows(tree))
        quality = tree.get("quality", [])
        # a rule's behaviour in provline's words (OpenLineage's severity `error` is a blocking rule)
        tables["quality"] = Table(["check", "column", "result", "blocks", "expected", "actual"],
                                  [[q["assertion"], q["column"], q["result"], BLOCKS.get(q["severity"], q["severity"]),
                                    q["expected"], q["actual"]] for q in quality], [q["result"] for q in quality])
    tables["versions"] = Table(["written", "partition", "version", "rows", "run", "Dagster run", "code version"],
                               [[v["event_time"], v["partition"], v["version"], v["row_count"], v["run_id"],
                                 v["dagster_run_id"], v["code_version"]] for v in versions])
    tables["runs"] = Table(["started", "partition", "state", "run", "Dagster run", "code version", "failed checks",
                            "flags"],
                           [[r["started"], r["partition"], r["state"], r["run_id"], r["dagster_run_id"],
                             r["code_version"], ", ".join(f"{a['assertion']} ({a['result']})"
                                                          for a in r["failed_assertions"]),
                             "; ".join(r["flags"])] for r in runs],
                           ["fail" if r["state"] in ("FAIL", "ABORT") else None for r in runs])
    legend = [(status, FILLS[status], label, meaning) for status, label, meaning in LEGEND]
    return _TEMPLATES.get_template("report.html").render(
        title=f"Audit: {dataset}" + (f" [{partition}]" if partition else ""), error=error, verdict=verdict,
        tree=tree, graph=graph(tree) if tree else None, tables=tables, legend=legend,
        columns=column_graph(column_lineage) if column_lineage else None)
