"""Lineage audits on a real materialized warehouse: queries, as-of, verify, report, CLI."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import duckdb
import pytest

from pipelines.audit import queries
from pipelines.audit.store import LineageStore
from pipelines.cli import main
from pipelines.definitions import catalog
from pipelines.verify import DIFFERS, REPRODUCED, Verdict
from pipelines.verify import verify as verify_version
from pipelines.warehouse import Warehouse

from .conftest import DAY, Audited, contract_results


@pytest.fixture
def store(audit_home: Path) -> LineageStore:
    store = LineageStore()
    store.ingest_file()
    return store


def verify(dataset: str, partition: str | None = None, version: str | None = None) -> Verdict:
    """`provline verify` on the warehouse of this test's PROVLINE_HOME."""
    return verify_version(dataset, partition, version, tables=catalog.specs, warehouse=Warehouse.from_settings())


def _walk(node: dict):
    yield node
    for child in node.get("inputs", []):
        yield from _walk(child)


def test_upstream_of_a_mart_reaches_raw_flights_with_version_and_checks(store: LineageStore, audited: Audited):
    with store.connect() as con:
        tree = queries.upstream(con, "marts.carrier_daily_performance", partition=DAY)
    assert tree["run"]["state"] == "COMPLETE"
    assert tree["code_version"] == catalog["marts.carrier_daily_performance"].code_version
    raw = [n for n in _walk(tree) if n["dataset"] == "raw.flights"]
    assert len(raw) == 1
    assert raw[0]["version"] == audited.second_hash and raw[0]["partition"] == DAY
    staging = next(n for n in _walk(tree) if n["dataset"] == "staging.flights")
    # each node's checks are those its run stored in the warehouse, as pass / warn / fail
    for node in (raw[0], staging):
        stored = contract_results(audited.home, node["dataset"])
        assert {q["assertion"]: q["result"] for q in node["quality"]} == stored, node["dataset"]
        assert node["quality_summary"] == {k: list(stored.values()).count(k) for k in ("pass", "warn", "fail")}
    assert raw[0]["quality_summary"]["pass"] == len(raw[0]["quality"])
    assert staging["quality_summary"]["warn"] == 1  # the departed flight without a tail number (conftest.py)
    # the raw table's own input is the source file
    assert raw[0]["inputs"][0]["namespace"] == "file"


def test_downstream_of_a_column_reaches_the_fact_table(store: LineageStore):
    with store.connect() as con:
        impact = queries.downstream(con, "raw.planes.tailnum")
    edges = {(e["from"], e["to"]): e for e in impact["edges"]}
    assert not edges[("raw.planes.tailnum", "staging.planes.tailnum")]["indirect"]
    # tailnum is the join key of flight_facts: it affects the whole table, and so what derives from it
    join = edges[("staging.planes.tailnum", "marts.flight_facts")]
    assert join["indirect"] and join["label"] == "indirect: JOIN"
    reached = {e["to"] for e in impact["edges"]}
    assert {"marts.carrier_daily_performance", "marts.route_daily"} <= {".".join(t.split(".")[:2]) for t in reached}
    assert not any("reads the dataset" in e["label"] for e in impact["edges"])  # no fallback: all have lineage
    with store.connect() as con:
        direct = queries.downstream(con, "raw.planes.year")
        plane_year = queries.downstream(con, "staging.planes.year")
    assert {"staging.planes.year", "marts.flight_facts.plane_year"} <= {e["to"] for e in direct["edges"]}
    # carrier_daily_performance neither derives a column from plane_year nor filters/joins/groups on it
    assert [e["to"] for e in plane_year["edges"]] == ["marts.flight_facts.plane_year"]
    assert not plane_year["edges"][0]["indirect"]
    with store.connect() as con, pytest.raises(queries.QueryError, match="no column 'nope'"):
        queries.downstream(con, "raw.planes.nope")


def test_as_of_before_the_rematerialization_returns_the_old_version(store: LineageStore, audited: Audited):
    with store.connect() as con:
        old = queries.upstream(con, "raw.flights", partition=DAY, as_of=audited.before_rerun)
        new = queries.upstream(con, "raw.flights", partition=DAY)
        history = queries.versions(con, "raw.flights", partition=DAY)
        old_versions = queries.versions(con, "raw.flights", partition=DAY, as_of=audited.before_rerun)
        old_tree = queries.upstream(con, "marts.carrier_daily_performance", partition=DAY, as_of=audited.before_rerun)
    assert old["version"] == audited.first_hash and new["version"] == audited.second_hash
    assert [v["version"] for v in history] == [audited.first_hash, audited.second_hash]
    assert [v["version"] for v in old_versions] == [audited.first_hash]
    assert next(n for n in _walk(old_tree) if n["dataset"] == "raw.flights")["version"] == audited.first_hash


def test_runs_states_and_integrity(store: LineageStore):
    with store.connect() as con:
        runs = queries.runs(con)
    assets = [r for r in runs if r["job"] == "raw.flights"]
    assert len(assets) == 2 and all(r["state"] == "COMPLETE" and not r["flags"] for r in assets)
    assert all(r["parent_run_id"] for r in assets)
    warned = [r for r in runs if r["job"] == "staging.flights" and r["failed_assertions"]]  # the second version's
    assert len(warned) == 1 and {a["result"] for a in warned[0]["failed_assertions"]} == {"warn"}


def test_verify_reproduces_both_versions(audit_home: Path):
    latest = verify("marts.carrier_daily_performance", DAY)
    assert latest.verdict == REPRODUCED, latest.text()
    assert latest.reproduced_hash == latest.version
    history = duckdb.connect(str(audit_home / "warehouse.duckdb"), read_only=True).execute(
        "SELECT content_hash FROM provline.version_log WHERE asset = 'marts.flight_facts' AND partition = ? "
        "ORDER BY written_at", [DAY]).fetchall()
    assert len({h for (h,) in history}) == 2
    old = verify("marts.flight_facts", DAY, history[0][0])
    assert old.verdict == REPRODUCED, old.text()


def test_tampered_snapshot_makes_verify_say_it_differs(audited: Audited, tmp_path: Path, monkeypatch):
    from tests.conftest import _isolate

    home = tmp_path / "copy"
    shutil.copytree(audited.home, home, ignore=shutil.ignore_patterns("*.lock"))
    _isolate(monkeypatch, home)
    recorded = verify("marts.carrier_daily_performance", DAY)
    facts = recorded.inputs[0]
    assert facts["name"] == "marts.flight_facts"
    snapshot = home / "snapshots" / "marts.flight_facts" / DAY / f"{facts['recorded']}.parquet"
    with duckdb.connect() as con:
        con.execute(f"""COPY (SELECT * REPLACE (arr_delay + 60 AS arr_delay) FROM read_parquet('{snapshot}'))
                        TO '{snapshot}.tmp' (FORMAT parquet)""")
    Path(f"{snapshot}.tmp").replace(snapshot)
    verdict = verify("marts.carrier_daily_performance", DAY)
    assert verdict.verdict == DIFFERS, verdict.text()
    assert verdict.reproduced_hash != verdict.version
    assert any("marts.flight_facts changed" in r for r in verdict.reasons)
    snapshot.unlink()
    gone = verify("marts.carrier_daily_performance", DAY)
    assert gone.verdict == "cannot verify" and "expired or missing" in " ".join(gone.reasons)


def test_cli_queries_and_report(audit_home: Path, tmp_path: Path, capsys):
    assert main(["lineage", "upstream", "marts.carrier_daily_performance", "--partition", DAY, "--json"]) == 0
    tree = json.loads(capsys.readouterr().out)
    assert tree["dataset"] == "marts.carrier_daily_performance"
    assert main(["lineage", "downstream", "raw.planes.tailnum"]) == 0
    assert "marts.flight_facts" in capsys.readouterr().out
    assert main(["lineage", "versions", "raw.flights", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert main(["lineage", "runs", "--json"]) == 0
    every_run = json.loads(capsys.readouterr().out)
    assert main(["lineage", "runs", "--failed"]) == 0
    failed = capsys.readouterr().out.splitlines()
    # no check failed a blocking rule: --failed lists exactly the runs that did not COMPLETE, and not the
    # staging.flights run that completed with WARN results
    assert not any(a["result"] == "fail" for r in every_run for a in r["failed_assertions"])
    assert any(r["job"] == "staging.flights" and r["failed_assertions"] for r in every_run)
    incomplete = {r["run_id"] for r in every_run if r["state"] != "COMPLETE"}
    listed = {line.rsplit(" run ", 1)[1] for line in failed if " run " in line and not line.startswith(" ")}
    assert listed == incomplete and failed[-1] == f"{len(incomplete)} run(s)"
    assert "staging.flights" not in "\n".join(failed)
    assert main(["lineage", "upstream", "no.such_table"]) == 2
    assert "no dataset 'no.such_table'" in capsys.readouterr().err
    assert main(["lineage", "runs", "--as-of", "yesterday"]) == 2
    out = tmp_path / "report.html"
    assert main(["audit", "report", "marts.carrier_daily_performance", "--partition", DAY, "--out", str(out)]) == 0
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html and "raw.flights" in html
    assert "reproduced" in html and "<script" not in html and "src=" not in html and "href=" not in html
    # the upstream warning (staging.flights: a departed flight without a tail number) is shown as one, by name
    assert re.search(r'<td class="warn">\d+ pass / 1 warn / 0 fail: departed_flight_has_tailnum', html)
