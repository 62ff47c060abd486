"""`provline audit report`: one self-contained HTML page (no external assets) for one dataset:
the provenance graph as inline SVG (layered by depth), the versions, the runs, the quality results of
the version audited, and the reproducibility verdict.

The page is templates/report.html, rendered by jinja2 with autoescape on: every value is escaped. This
module only arranges the data (table rows, graph coordinates)."""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import Environment, PackageLoader, StrictUndefined

NODE_W, NODE_H, COL_GAP, ROW_GAP = 230, 46, 70, 14
_TEMPLATES = Environment(loader=PackageLoader("pipelines.audit"), autoescape=True, undefined=StrictUndefined,
                         trim_blocks=True, lstrip_blocks=True)


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list]
    classes: list[str | None] | None = None  # one CSS class (or None) per row


def _text(value) -> str:
    return "" if value is None else str(value)


def _short(value, n: int = 12) -> str:
    text = _text(value)
    return text if len(text) <= n else text[:n] + "…"


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
        summary = node.get("quality_summary") or {}
        fill = "#fde2e2" if summary.get("fail") else "#fff4d6" if summary.get("warn") else "#e6f4ea"
        if node.get("version") is None:
            fill = "#eeeeee"
        x, y = pos[node["key"]]
        boxes.append({
            "x": x, "y": y, "fill": fill, "title": f"{node['dataset']} {_text(node.get('version'))}",
            "label": node["dataset"] if len(node["dataset"]) <= 34 else "…" + node["dataset"][-33:],
            "detail": f"v {_short(node.get('version'))}" + (f" · {node['partition']}" if node.get("partition") else ""),
        })
    return {
        "width": (max_depth + 1) * (NODE_W + COL_GAP) + 20,
        "height": max(len(layer) for layer in layers.values()) * (NODE_H + ROW_GAP) + 20,
        "node_w": NODE_W, "node_h": NODE_H,
        "edges": [(pos[s][0] + NODE_W, pos[s][1] + NODE_H / 2, pos[d][0], pos[d][1] + NODE_H / 2) for s, d in edges],
        "nodes": boxes,
    }


def _provenance_rows(tree: dict) -> list[list]:
    nodes, _ = _flatten(tree)
    rows = []
    for n in sorted(nodes, key=lambda n: (n["depth"], n["dataset"])):
        run = n.get("run") or {}
        s = n.get("quality_summary") or {}
        rows.append([n["depth"], n["dataset"], n.get("partition"), n.get("version"), run.get("job"),
                     run.get("run_id"), run.get("state"), n.get("code_version"),
                     f"{s.get('pass', 0)} pass / {s.get('warn', 0)} warn / {s.get('fail', 0)} fail" if s else
                     n.get("note", "")])
    return rows


def render(dataset: str, partition: str | None, tree: dict | None, versions: list[dict], runs: list[dict],
           verdict: dict | None, error: str | None = None) -> str:
    tables: dict[str, Table] = {}
    if verdict:
        tables["verdict"] = Table(["", ""], [
            ["version (recorded)", verdict.get("version")],
            ["re-derived hash", verdict.get("reproduced_hash")],
            ["code version recorded / now",
             f"{verdict.get('recorded_code_version')} / {verdict.get('current_code_version')}"]])
        tables["inputs"] = Table(["input", "recorded", "loaded", "status"],
                                 [[i["name"], i["recorded"], i.get("loaded"), i["status"]]
                                  for i in verdict.get("inputs", [])])
    if tree:
        tables["provenance"] = Table(["depth", "dataset", "partition", "version", "job", "run", "state",
                                      "code version", "quality"], _provenance_rows(tree))
        quality = tree.get("quality", [])
        tables["quality"] = Table(["check", "column", "result", "severity", "expected", "actual"],
                                  [[q["assertion"], q["column"], q["result"], q["severity"], q["expected"],
                                    q["actual"]] for q in quality], [q["result"] for q in quality])
    tables["versions"] = Table(["written", "partition", "version", "rows", "run", "code version"],
                               [[v["event_time"], v["partition"], v["version"], v["row_count"], v["run_id"],
                                 v["code_version"]] for v in versions])
    tables["runs"] = Table(["started", "partition", "state", "run", "code version", "failed checks", "flags"],
                           [[r["started"], r["partition"], r["state"], r["run_id"], r["code_version"],
                             ", ".join(f"{a['assertion']} ({a['result']})" for a in r["failed_assertions"]),
                             "; ".join(r["flags"])] for r in runs],
                           ["fail" if r["state"] in ("FAIL", "ABORT") else None for r in runs])
    return _TEMPLATES.get_template("report.html").render(
        title=f"Audit: {dataset}" + (f" [{partition}]" if partition else ""), error=error, verdict=verdict,
        tree=tree, graph=graph(tree) if tree else None, tables=tables)
