"""The HTML audit report, read back as a browser would: its tables, graph and legend."""

from __future__ import annotations

import hashlib
import json
import uuid
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import pytest

from pipelines.audit import queries, report
from pipelines.audit.store import LineageStore
from pipelines.cli import main
from tests.conftest import _isolate

from .conftest import DAY, Audited, contract_results


class Page(HTMLParser):
    """Tables (rows of (tag, attributes, text) cells, each with its preceding h2), SVG texts, titles and
    rect fills, and every element's attributes."""

    def __init__(self, html: str):
        super().__init__()
        self.tables: list[tuple[str, list[list[tuple[str, dict, str]]]]] = []
        self.svg_texts: list[str] = []
        self.svg_titles: list[str] = []
        self.fills: set[str] = set()
        self.elements: list[tuple[str, dict]] = []
        self._h2, self._text, self._cell, self._table = "", None, None, None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        self.elements.append((tag, attributes))
        if tag in ("h2", "text", "title", "td", "th"):
            self._text = []
        if tag == "table":
            self._table = []
            self.tables.append((self._h2, self._table))
        elif tag == "tr":
            self._table.append([])
        elif tag in ("td", "th"):
            self._cell = (tag, attributes)
        elif tag == "rect" and "fill" in attributes:  # the lineage graph's nodes (column boxes are styled)
            self.fills.add(attributes["fill"])

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        text = "".join(self._text or [])
        if tag == "h2":
            self._h2 = text
        elif tag in ("td", "th"):
            self._table[-1].append((*self._cell, text))
        elif tag == "text":
            self.svg_texts.append(text)
        elif tag == "title":
            self.svg_titles.append(text)
        if tag in ("h2", "text", "title", "td", "th"):
            self._text = None

    def table(self, heading: str) -> list[dict[str, tuple[str, dict, str]]]:
        """The rows of the first table under the h2 starting with `heading`, as {header: cell}."""
        rows = next(rows for h2, rows in self.tables if h2.startswith(heading))
        headers = [text for _, _, text in rows[0]]
        return [dict(zip(headers, row, strict=True)) for row in rows[1:]]


@pytest.fixture(scope="module")
def page(audited: Audited, tmp_path_factory: pytest.TempPathFactory) -> Page:
    out = tmp_path_factory.mktemp("report") / "report.html"
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, audited.home)
        assert main(["audit", "report", "marts.carrier_daily_performance", "--partition", DAY,
                     "--out", str(out)]) == 0
    return Page(out.read_text())


def test_each_openlineage_run_is_shown_with_its_dagster_run(page: Page, audited: Audited):
    with duckdb.connect(str(audited.home / "lineage.duckdb"), read_only=True) as con:
        dagster_run = dict(con.execute("SELECT DISTINCT run_id, dagster_run_id FROM events").fetchall())
    for heading in ("Provenance", "Versions", "Runs"):
        rows = [r for r in page.table(heading) if r["run"][2]]
        assert rows and all(r["Dagster run"][2] == dagster_run[r["run"][2]] for r in rows), heading
    assert len({r["Dagster run"][2] for r in page.table("Versions")}) == 2  # the day was materialized twice


def test_no_blank_header_row(page: Page):
    for heading, rows in page.tables:
        assert all(any(text for _, _, text in row) for row in rows), heading
    verdict = next(rows for heading, rows in page.tables if heading == "Reproducibility")
    assert [text for _, _, text in verdict[0]][0] == "version (recorded)"  # key/value rows, no header row


def test_a_legend_explains_every_colour_used(page: Page):
    legend = [attributes for tag, attributes in page.elements if "swatch" in attributes.get("class", "")]
    explained = {a["style"].removeprefix("background:") for a in legend}
    assert page.fills <= explained and {"pass", "warn", "fail"} <= {a["class"].split()[-1] for a in legend}


def test_an_upstream_warning_is_shown_as_a_warning_and_named(page: Page, audited: Audited):
    staging = next(r for r in page.table("Provenance") if r["dataset"][2] == "staging.flights")
    _, attributes, text = staging["quality"]
    assert attributes.get("class") == "warn"
    results = contract_results(audited.home, "staging.flights")
    warned = sorted(name for name, result in results.items() if result == "warn")
    assert warned == ["departed_flight_has_tailnum"] and "fail" not in results.values()
    assert text == f"{len(results) - 1} pass / 1 warn / 0 fail: departed_flight_has_tailnum"


def test_long_paths_are_shortened_with_the_full_path_in_a_title(page: Page):
    sources = [r for r in page.table("Provenance") if r["dataset"][1].get("title", "").startswith("/")]
    assert len(sources) == 5  # the five source files
    for row in sources:
        _, attributes, text = row["dataset"]
        full = attributes["title"]
        assert text == "…/" + "/".join(Path(full).parts[-3:]) and len(text) < len(full)
        assert f"{full} {row['version'][2]}" in page.svg_titles and full not in page.svg_texts  # the node: path, md5
    assert not [t for t in page.svg_texts if t.startswith("/")]


def _event(run_id: str, event_type: str, inputs: list[dict], output: str, version: str | None) -> str:
    facet = {"_producer": "https://example.com/p", "_schemaURL": "https://example.com/f.json"}
    return json.dumps({
        "eventTime": f"2013-01-14T06:00:0{'1' if event_type == 'COMPLETE' else '0'}+00:00",
        "eventType": event_type, "producer": "https://example.com/p",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": {"runId": run_id, "facets": {"tags": {**facet, "tags": [{"key": "dagster_run_id", "value": "d-1"}]}}},
        "job": {"namespace": "provline", "name": output}, "inputs": inputs,
        "outputs": [{"namespace": "duckdb://warehouse", "name": output,
                     "facets": {"version": {**facet, "datasetVersion": version}} if version else {}}]})


def test_source_file_versions_are_shown_as_their_content_hashes(tmp_path: Path):
    """Source-file inputs carry a version facet (the file's md5): queries and report show it."""
    md5 = hashlib.md5(b"carrier,name\n").hexdigest()
    facet = {"_producer": "https://example.com/p", "_schemaURL": "https://example.com/f.json"}
    files = [{"namespace": "file", "name": "/data/deliveries/2013/airlines.csv",
              "facets": {"version": {**facet, "datasetVersion": md5}}},
             {"namespace": "file", "name": "/data/deliveries/2013/legacy.csv"}]  # a producer without versions
    run_id = str(uuid.uuid4())
    store = LineageStore(path=tmp_path / "lineage.duckdb")
    store.ingest_payloads([_event(run_id, "START", files, "raw.airlines", None),
                           _event(run_id, "COMPLETE", files, "raw.airlines", "v1")])
    with store.connect() as con:
        tree = queries.upstream(con, "raw.airlines")
        versions = queries.versions(con, "raw.airlines")
        runs = queries.runs(con)
    versioned, legacy = tree["inputs"]
    assert versioned["version"] == md5 and "source" in versioned["note"] and "not in the store" not in versioned["note"]
    assert legacy["version"] is None and legacy["note"].startswith("no version recorded")
    html = report.render("raw.airlines", None, tree, versions, runs, None)
    page = Page(html)
    rows = {r["dataset"][1]["title"]: r for r in page.table("Provenance") if "title" in r["dataset"][1]}
    assert rows["/data/deliveries/2013/airlines.csv"]["version"][2] == md5
    assert rows["/data/deliveries/2013/legacy.csv"]["version"][2] == ""
    assert f"v {md5[:12]}…" in page.svg_texts
    assert "no version recorded" in page.svg_texts and "v " not in page.svg_texts


def test_every_value_is_escaped(tmp_path: Path):
    """Events come from any producer (lineage serve): a name is text, never markup."""
    store = LineageStore(path=tmp_path / "lineage.duckdb")
    evil = '/drop/"><script>alert(1)</script>/x.csv'
    store.ingest_payloads([_event(str(uuid.uuid4()), "COMPLETE", [{"namespace": "file", "name": evil}],
                                  "raw.<b>x</b>", "v1")])
    with store.connect() as con:
        tree = queries.upstream(con, "raw.<b>x</b>")
    html = report.render("raw.<b>x</b>", None, tree, [], [], None, error="<img src=x>")
    assert "<script" not in html and "<b>" not in html and "<img" not in html
    assert "raw.&lt;b&gt;x&lt;/b&gt;" in html and "&lt;img src=x&gt;" in html
    assert evil in Page(html).svg_titles


def test_the_column_lineage_of_the_version_is_drawn_and_listed(page: Page):
    """Each output column and the input columns it comes from, as a picture and a table (issue 21, item 3): what
    Dagster's open-source UI shows only as JSON in a run's event log."""
    listed = {r["column"][2]: r["comes from (input column, how)"][2] for r in page.table("Column lineage")}
    assert listed["mean_dep_delay"] == "marts.flight_facts.dep_delay (direct aggregation)"
    assert listed["airline_name"].startswith("marts.flight_facts.airline_name (direct")
    assert "marts.flight_facts.cancelled (indirect" in listed["cancelled"]  # count(*) FILTER (WHERE cancelled)
    assert "marts.flight_facts.flight_date" in listed[report.WHOLE_TABLE]  # the range filter shapes every row
    drawn = [attributes for tag, attributes in page.elements if attributes.get("class") == "column-edge"]
    assert len(drawn) == sum(text.count("(") for text in listed.values())  # a line per dependency
    assert "marts.flight_facts.dep_delay -> mean_dep_delay: DIRECT (AGGREGATION)" in page.svg_titles
