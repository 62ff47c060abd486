"""What the `provline` commands print and return: verify's verdicts and exit codes, `--as-of` with a valid
time, and the `--json` of downstream, runs and status, each checked against what it reports on."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from pipelines.audit import queries
from pipelines.audit.store import LineageStore
from pipelines.cli import main
from pipelines.definitions import catalog

from .conftest import DAY, Audited

MART = "marts.carrier_daily_performance"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """`provline ARGV`: its exit code and its standard output."""
    code = main(list(argv))
    return code, capsys.readouterr().out


def as_json(value) -> object:
    """A query's answer as the CLI's JSON gives it back."""
    return json.loads(json.dumps(value, default=str))


@pytest.fixture
def copied_home(audited: Audited, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the audited PROVLINE_HOME, to change."""
    from tests.conftest import _isolate

    home = tmp_path / "copy"
    shutil.copytree(audited.home, home, ignore=shutil.ignore_patterns("*.lock"))
    _isolate(monkeypatch, home)
    return home


def test_verify_reproduced_exits_0(audit_home: Path, capsys):
    code, out = run(capsys, "verify", MART, "--partition", DAY, "--json")
    verdict = json.loads(out)
    assert code == 0
    assert (verdict["verdict"], verdict["dataset"], verdict["partition"]) == ("reproduced", MART, DAY)
    assert verdict["reproduced_hash"] == verdict["version"] and verdict["reasons"] == []
    assert verdict["recorded_code_version"] == verdict["current_code_version"] == catalog[MART].code_version
    code, out = run(capsys, "verify", MART, "--partition", DAY)
    assert code == 0 and out.startswith(f"{MART} [{DAY}] version {verdict['version']}: REPRODUCED\n")


def _changed_code(monkeypatch: pytest.MonkeyPatch, sql: str) -> str:
    """Today's code of MART is `sql` (as after an edit of its SQL file); returns its new code version."""
    changed = dataclasses.replace(catalog[MART], sql=sql)
    monkeypatch.setitem(catalog.specs, MART, changed)
    return changed.code_version


def test_verify_with_a_code_change_that_keeps_the_result_exits_0_and_says_so(audit_home: Path, capsys, monkeypatch):
    recorded = catalog[MART].code_version
    now = _changed_code(monkeypatch, "-- reformatted\n" + catalog[MART].sql)
    assert now != recorded
    code, out = run(capsys, "verify", MART, "--partition", DAY, "--json")
    verdict = json.loads(out)
    assert code == 0 and verdict["verdict"] == "reproduced"
    assert (verdict["recorded_code_version"], verdict["current_code_version"]) == (recorded, now)
    assert verdict["reasons"] == [f"same hash with today's code version {now} (recorded {recorded})"]


def test_verify_differs_after_a_code_change_exits_1_and_names_it(audit_home: Path, capsys, monkeypatch):
    recorded = catalog[MART].code_version
    sql = catalog[MART].sql.replace("avg(arr_delay) AS mean_arr_delay", "avg(arr_delay) + 1 AS mean_arr_delay")
    now = _changed_code(monkeypatch, sql)
    code, out = run(capsys, "verify", MART, "--partition", DAY, "--json")
    verdict = json.loads(out)
    assert code == 1 and verdict["verdict"] == "differs"
    assert verdict["reproduced_hash"] not in (None, verdict["version"])
    assert verdict["reasons"] == [f"code version changed: recorded {recorded}, now {now}"]
    assert {i["status"] for i in verdict["inputs"]} == {"unchanged"}
    code, out = run(capsys, "verify", MART, "--partition", DAY)
    assert code == 1 and f"version {verdict['version']}: DIFFERS\n" in out
    assert f"  code version   recorded {recorded}, now {now}\n" in out


def test_verify_cannot_verify_exits_1_and_says_why(copied_home: Path, capsys):
    code, out = run(capsys, "verify", MART, "--partition", DAY, "--json")
    facts = json.loads(out)["inputs"][0]
    assert code == 0 and facts["name"] == "marts.flight_facts"
    snapshot = copied_home / "snapshots" / "marts.flight_facts" / DAY / f"{facts['recorded']}.parquet"
    snapshot.unlink()
    code, out = run(capsys, "verify", MART, "--partition", DAY, "--json")
    verdict = json.loads(out)
    assert code == 1 and verdict["verdict"] == "cannot verify" and verdict["reproduced_hash"] is None
    assert verdict["reasons"] == [f"input snapshot of marts.flight_facts version {facts['recorded']} expired or "
                                  f"missing ({snapshot})"]
    code, out = run(capsys, "verify", MART, "--partition", DAY)
    assert code == 1 and ": CANNOT VERIFY\n" in out
    code, out = run(capsys, "verify", MART, "--partition", "2013-01-02", "--json")
    (reason,) = json.loads(out)["reasons"]
    assert code == 1 and reason.startswith("the version log has no ") and reason.endswith(f"{MART} [2013-01-02]")


def test_as_of_a_valid_time_answers_with_what_was_true_then(audit_home: Path, audited: Audited, capsys):
    before = audited.before_rerun.isoformat()
    code, out = run(capsys, "lineage", "versions", "raw.flights", "--partition", DAY, "--as-of", before, "--json")
    assert code == 0 and [v["version"] for v in json.loads(out)] == [audited.first_hash]
    code, out = run(capsys, "lineage", "upstream", MART, "--partition", DAY, "--as-of", before, "--json")
    raw = [n for n in _walk(json.loads(out)) if n["dataset"] == "raw.flights"]
    assert code == 0 and [n["version"] for n in raw] == [audited.first_hash]
    code, out = run(capsys, "lineage", "upstream", "raw.flights", "--partition", DAY, "--as-of",
                    before.replace("+00:00", "Z"))
    assert code == 0 and out.startswith(f"raw.flights [{DAY}] @ {audited.first_hash}\n")
    assert main(["lineage", "upstream", "raw.flights", "--partition", DAY, "--as-of", "2013-01-01T00:00:00Z"]) == 2
    assert capsys.readouterr().err == "error: no dataset 'raw.flights' in the lineage store as of " \
                                      "2013-01-01T00:00:00+00:00\n"  # nothing was written by then


def _walk(node: dict):
    yield node
    for child in node.get("inputs", []):
        yield from _walk(child)


def test_json_of_downstream_and_runs_is_the_query_answer(audit_home: Path, capsys):
    code, out = run(capsys, "lineage", "downstream", "raw.planes.tailnum", "--json")
    downstream = json.loads(out)
    runs_code, runs_out = run(capsys, "lineage", "runs", "--json")
    failed_code, failed_out = run(capsys, "lineage", "runs", "--failed", "--json")
    with LineageStore().connect() as con:
        assert (code, downstream) == (0, as_json(queries.downstream(con, "raw.planes.tailnum")))
        assert (runs_code, json.loads(runs_out)) == (0, as_json(queries.runs(con)))
        assert (failed_code, json.loads(failed_out)) == (0, as_json(queries.runs(con, failed=True)))
    assert (downstream["dataset"], downstream["column"]) == ("raw.planes", "tailnum")
    edges = {(e["from"], e["to"]): e["label"] for e in downstream["edges"]}
    assert edges[("staging.planes.tailnum", "marts.flight_facts")] == "indirect: JOIN"
    runs = json.loads(runs_out)
    # 13 assets, then the 7 flights assets again; their 3 Dagster runs have no terminal event (no sensor ran)
    parents = {r["parent_run_id"] for r in runs}
    assert Counter((r["job"], r["state"]) for r in runs if r["run_id"] in parents) == {
        ("materialize:group:reference", "RUNNING"): 1, ("materialize:group:flights", "RUNNING"): 2}
    assert Counter(r["state"] for r in runs) == {"COMPLETE": 6 + 7 + 7, "RUNNING": 3}
    assert json.loads(failed_out) == [r for r in runs if r["state"] == "RUNNING"]


def test_json_of_status_is_the_version_log(audit_home: Path, capsys):
    code, out = run(capsys, "status", "--json")
    status = {row["asset"]: row for row in json.loads(out)}
    assert code == 0 and set(status) == set(catalog.specs)
    assert status["raw.flights"]["partitions"] == "1" and status["raw.planes"]["partitions"] == "1"
    import duckdb

    with duckdb.connect(str(audit_home / "warehouse.duckdb"), read_only=True) as con:
        for asset, row in status.items():
            table_rows = con.execute(f"SELECT count(*) FROM {asset}").fetchone()[0]
            assert row["rows"] == str(table_rows), asset
