"""`provline audit report`: one self-contained HTML page (no external assets) for one dataset:
the provenance graph as inline SVG (layered by depth), the versions, the runs, the quality results of
the version audited, and the reproducibility verdict. Every value is escaped."""

from __future__ import annotations

from html import escape

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}.pass{color:#176f2c}.warn{color:#a86400}.fail{color:#b00020;font-weight:bold}
.verdict{font-size:1.2em;padding:.5em 1em;display:inline-block;border-radius:4px;background:#eee}
code{font-size:12px}svg text{font:12px system-ui,sans-serif}
"""
NODE_W, NODE_H, COL_GAP, ROW_GAP = 230, 46, 70, 14


def _e(value) -> str:
    return escape("" if value is None else str(value))


def _short(value, n: int = 12) -> str:
    text = "" if value is None else str(value)
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


def svg_graph(tree: dict) -> str:
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
    width = (max_depth + 1) * (NODE_W + COL_GAP) + 20
    height = max(len(layer) for layer in layers.values()) * (NODE_H + ROW_GAP) + 20
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="lineage graph">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" '
             'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#888"/></marker></defs>']
    for src, dst in edges:
        (x1, y1), (x2, y2) = pos[src], pos[dst]
        parts.append(f'<line x1="{x1 + NODE_W}" y1="{y1 + NODE_H / 2}" x2="{x2}" y2="{y2 + NODE_H / 2}" '
                     'stroke="#888" marker-end="url(#arrow)"/>')
    for node in nodes:
        x, y = pos[node["key"]]
        summary = node.get("quality_summary") or {}
        color = "#fde2e2" if summary.get("fail") else "#fff4d6" if summary.get("warn") else "#e6f4ea"
        if node.get("version") is None:
            color = "#eeeeee"
        label = node["dataset"] if len(node["dataset"]) <= 34 else "…" + node["dataset"][-33:]
        detail = f"v {_short(node.get('version'))}" + (f" · {node['partition']}" if node.get("partition") else "")
        parts.append(f'<g><title>{_e(node["dataset"])} {_e(node.get("version"))}</title>'
                     f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="5" fill="{color}" stroke="#666"/>'
                     f'<text x="{x + 8}" y="{y + 18}">{_e(label)}</text>'
                     f'<text x="{x + 8}" y="{y + 36}" fill="#555">{_e(detail)}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def _table(headers: list[str], rows: list[list], classes: list[str | None] | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{_e(classes[i])}"' if classes and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>" if rows else "<p>(none)</p>"


def _provenance_rows(tree: dict) -> list[list]:
    nodes, _ = _flatten(tree)
    rows = []
    for n in sorted(nodes, key=lambda n: (n["depth"], n["dataset"])):
        run = n.get("run") or {}
        s = n.get("quality_summary") or {}
        rows.append([n["depth"], n["dataset"], n.get("partition") or "", n.get("version") or "",
                     run.get("job") or "", run.get("run_id") or "", run.get("state") or "", n.get("code_version") or "",
                     f"{s.get('pass', 0)} pass / {s.get('warn', 0)} warn / {s.get('fail', 0)} fail" if s else
                     n.get("note", "")])
    return rows


def render(dataset: str, partition: str | None, tree: dict | None, versions: list[dict], runs: list[dict],
           verdict: dict | None, error: str | None = None) -> str:
    title = f"Audit: {dataset}" + (f" [{partition}]" if partition else "")
    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
           f"<style>{CSS}</style></head><body><h1>{_e(title)}</h1>"]
    if error:
        out.append(f"<p class='fail'>{_e(error)}</p>")
    if verdict:
        out.append("<h2>Reproducibility</h2>")
        out.append(f"<p class='verdict {'pass' if verdict['verdict'] == 'reproduced' else 'fail'}'>"
                   f"{_e(verdict['verdict'])}</p>")
        out.append(_table(["", ""], [["version (recorded)", verdict.get("version")],
                                     ["re-derived hash", verdict.get("reproduced_hash")],
                                     ["code version recorded / now",
                                      f"{verdict.get('recorded_code_version')} / "
                                      f"{verdict.get('current_code_version')}"]]))
        out.append(_table(["input", "recorded", "loaded", "status"],
                          [[i["name"], i["recorded"], i.get("loaded"), i["status"]]
                           for i in verdict.get("inputs", [])]))
        if verdict.get("reasons"):
            out.append("<ul>" + "".join(f"<li>{_e(r)}</li>" for r in verdict["reasons"]) + "</ul>")
    if tree:
        out.append("<h2>Lineage</h2>" + svg_graph(tree))
        out.append("<h2>Provenance</h2>")
        out.append(_table(["depth", "dataset", "partition", "version", "job", "run", "state", "code version",
                           "quality"], _provenance_rows(tree)))
        out.append(f"<h2>Quality results of version {_e(tree.get('version'))}</h2>")
        quality = tree.get("quality", [])
        out.append(_table(["check", "column", "result", "severity", "expected", "actual"],
                          [[q["assertion"], q["column"], q["result"], q["severity"], q["expected"], q["actual"]]
                           for q in quality], [q["result"] for q in quality]))
    out.append("<h2>Versions</h2>")
    out.append(_table(["written", "partition", "version", "rows", "run", "code version"],
                      [[v["event_time"], v["partition"], v["version"], v["row_count"], v["run_id"], v["code_version"]]
                       for v in versions]))
    out.append("<h2>Runs</h2>")
    out.append(_table(["started", "partition", "state", "run", "code version", "failed checks", "flags"],
                      [[r["started"], r["partition"], r["state"], r["run_id"], r["code_version"],
                        ", ".join(f"{a['assertion']} ({a['result']})" for a in r["failed_assertions"]),
                        "; ".join(r["flags"])] for r in runs],
                      ["fail" if r["state"] in ("FAIL", "ABORT") else None for r in runs]))
    out.append("</body></html>")
    return "".join(out)
