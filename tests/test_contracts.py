"""Data contracts that travel (pipelines/contracts): every flights table exported to ODCS v3.1.0, accepted by the
standard's JSON schema and by datacontract-cli (`lint`, and `test` against warehouses built by real Dagster runs,
its verdict on every rule equal to provline's), imported back to pandera with equal verdicts on the real data,
breaking changes found against a git ref, no secret in a server block, and the contract version recorded."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from datacontract.data_contract import DataContract

from pipelines.cli import main
from pipelines.contracts import load
from pipelines.contracts.importer import class_name, import_contract
from pipelines.contracts.validate import schema_problems
from pipelines.definitions import catalog
from pipelines.quality import rules_of, validate
from pipelines.sql import quote
from pipelines.warehouse import Warehouse, quarantine_table
from tests.conftest import REPO, _isolate, materialize

FLIGHTS_TABLES = 13
DATACONTRACT = str(Path(sys.executable).parent / "datacontract")  # the CLI installed beside this Python (the dev extra)
WIND_DAY, GAP_DAY = "2013-02-12", "2013-02-20"  # the 1048 mph reading (quarantined); 20 flights with no weather


def _export(home: Path, out: Path, *tables: str) -> dict[str, dict]:
    """`provline contract export` into `out` for the warehouse under `home`; table -> document as written."""
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, home)
        assert main(["contract", "export", *tables, "--out", str(out)]) == 0
    return {path.name.removesuffix(".odcs.yaml"): load(path) for path in sorted(out.glob("*.odcs.yaml"))}


def _provline_verdicts(home: Path) -> dict[tuple[str, str], bool]:
    """(table, rule) -> passed in every partition's latest validation (a monitor with no verdict yet has none).
    An acknowledged rule by the contract's verdict: an acknowledgement is the team's, not part of the contract."""
    acknowledged = {(spec.table, rule.name) for spec in catalog for rule in spec.rules if rule.acknowledgement}
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        rows = con.execute(
            """WITH latest AS (SELECT * FROM quality.check_results
                               QUALIFY recorded_at = max(recorded_at) OVER (PARTITION BY asset, partition))
               SELECT asset, check_name, bool_and(passed), bool_and(failing_rows = 0) FROM latest
               WHERE passed IS NOT NULL GROUP BY ALL""").fetchall()
    return {(table, rule): none_failed if (table, rule) in acknowledged else passed
            for table, rule, passed, none_failed in rows}


def _datacontract_runs(folder: Path) -> dict[str, object]:
    """datacontract-cli's own test run (its Python API, in this process) of every exported document."""
    return {path.name.removesuffix(".odcs.yaml"): DataContract(data_contract_file=str(path)).test()
            for path in sorted(folder.glob("*.odcs.yaml"))}


def _assert_same_verdicts(runs: dict, provline: dict[tuple[str, str], bool]) -> None:
    """Every rule datacontract-cli ran (a check carrying provline's rule name) has provline's verdict."""
    compared = 0
    for table, run in runs.items():
        for check in run.checks:
            if check.qualityId is None:
                continue  # datacontract-cli's own schema checks (presence, type, required, range)
            assert (table, check.qualityId) in provline, f"{table}: {check.qualityId} is not a rule provline ran"
            assert (check.result.value == "passed") == provline[(table, check.qualityId)], \
                f"{table}: {check.qualityId} is {check.result.value} in datacontract-cli: {check.reason}"
            compared += 1
    assert compared > 150  # every runnable rule of the 13 tables, not a few


@pytest.fixture(scope="module")
def defects(tmp_path_factory: pytest.TempPathFactory):
    """A warehouse with the reference tables and two days with known defects: the quarantined wind reading
    (WIND_DAY) and a weather gap (GAP_DAY); both have flights with unknown tail numbers."""
    home = tmp_path_factory.mktemp("defects") / "provline"
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, home)
        assert materialize("reference").success
        assert materialize("flights", WIND_DAY).success
        assert materialize("flights", GAP_DAY).success
    return home


def test_every_flights_table_exports_to_odcs_that_the_schema_and_datacontract_lint_accept(one_day, tmp_path):
    documents = _export(one_day, tmp_path / "contracts")
    assert len(documents) == FLIGHTS_TABLES
    for table, document in documents.items():
        assert schema_problems(document) == [], table
        lint = DataContract(data_contract_file=str(tmp_path / "contracts" / f"{table}.odcs.yaml")).lint()
        assert lint.result.value == "passed", (table, [c.reason for c in lint.checks])
    # the real CLI, once
    weather_file = tmp_path / "contracts" / "staging.weather.odcs.yaml"
    cli = subprocess.run([DATACONTRACT, "lint", str(weather_file)], capture_output=True, text=True,
                         timeout=120)
    assert cli.returncode == 0 and "valid" in cli.stdout, cli.stdout + cli.stderr

    weather = documents["staging.weather"]
    assert (weather["apiVersion"], weather["version"], weather["domain"]) == ("v3.1.0", "1.0.0", "flights")
    assert weather["team"]["name"] == "flights-data"
    props = {p["name"]: p for p in weather["schema"][0]["properties"]}
    assert [n for n, p in props.items() if p.get("primaryKey")] == ["origin", "time_hour"]
    assert props["obs_date"]["partitioned"] and props["obs_date"]["physicalType"] == "DATE"
    assert props["wind_speed"]["logicalTypeOptions"] == {"minimum": 0, "maximum": 200}
    (wind,) = props["wind_speed"]["quality"]
    assert (wind["id"], wind["type"], wind["severity"]) == ("wind_speed_in_range", "sql", "warning")
    assert {"property": "behaviour", "value": "quarantine"} in wind["customProperties"]
    assert quarantine_table("staging.weather").split(".")[1] in wind["query"]  # it sees the quarantined rows
    assert weather["servers"] == [{"server": "warehouse", "type": "duckdb", "environment": "provline",
                                   "database": str(one_day / "warehouse.duckdb"), "schema": "staging"}]
    planes = {p["name"]: p for p in documents["staging.planes"]["schema"][0]["properties"]}
    assert "required" not in planes["year"] and "logicalTypeOptions" not in planes["year"]  # warn: not guaranteed
    facts = documents["marts.flight_facts"]
    assert facts["slaProperties"][0] | {"description": ""} == {
        "property": "freshness", "value": 27, "unit": "h", "driver": "operational", "description": ""}
    raw_flights = {p["name"]: p for p in documents["raw.flights"]["schema"][0]["properties"]}
    assert [raw_flights[c].get("partitionKeyPosition") for c in ("year", "month", "day")] == [1, 2, 3]


def test_datacontract_test_gives_provline_verdicts_on_a_clean_day(one_day, tmp_path, monkeypatch):
    documents = _export(one_day, tmp_path / "contracts")
    monkeypatch.setenv("HOME", str(tmp_path))  # where DuckDB would install a downloaded extension
    runs = _datacontract_runs(tmp_path / "contracts")
    provline = _provline_verdicts(one_day)
    _assert_same_verdicts(runs, provline)
    clean = {t for t in documents if all(passed for (table, _), passed in provline.items() if table == t)}
    assert {"staging.weather", "raw.weather", "marts.carrier_daily_performance", "marts.route_daily"} <= clean
    assert {t for t, run in runs.items() if run.result.value == "passed"} == clean
    flights = {c.qualityId: c.result.value for c in runs["staging.flights"].checks if c.qualityId}
    # the unknown tail numbers (15% of the day) are under the rule's threshold (20%), which the document states
    assert flights["tailnum_in_staging_planes"] == "passed"
    assert not (tmp_path / ".duckdb").exists()  # datacontract-cli's DuckDB installed (downloaded) no extension


@pytest.mark.slow
def test_datacontract_test_names_the_known_defects(defects, tmp_path):
    _export(defects, tmp_path / "contracts")
    runs = _datacontract_runs(tmp_path / "contracts")
    _assert_same_verdicts(runs, _provline_verdicts(defects))
    failed = {(t, c.qualityId): c.result.value for t, run in runs.items() for c in run.checks
              if c.qualityId and c.result.value != "passed"}
    assert failed[("staging.weather", "wind_speed_in_range")] == "warning"
    assert failed[("marts.flight_facts", "weather_coverage")] == "warning"
    assert ("staging.flights", "tailnum_in_staging_planes") not in failed  # under its threshold, as in provline
    # the datacontract CLI itself: its JSON report names the rule; warnings leave its exit status 0
    report = tmp_path / "weather.json"
    weather_file = tmp_path / "contracts" / "staging.weather.odcs.yaml"
    cli = subprocess.run([DATACONTRACT, "test", str(weather_file), "--output-format", "json",
                          "--output", str(report)], capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    checks = json.loads(report.read_text())["checks"]
    assert [c["result"] for c in checks if c["qualityId"] == "wind_speed_in_range"] == ["warning"]


def _verdicts(home: Path, contract, spec, reference_values: dict) -> dict[str, tuple[str, int]]:
    """rule -> (behaviour, failing rows) of `contract` on what provline validated of the table: its rows and its
    quarantined rows, every partition built."""
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        frame = con.execute(f"SELECT * FROM {quote(spec.table)}").df()
        quarantined = con.execute(f"SELECT * EXCLUDE (_quarantine_reasons, _run_id) FROM "
                                  f"{quote(quarantine_table(spec.table))}").df()
    frame = pd.concat([frame, quarantined], ignore_index=True)
    result = validate(frame, contract, key_columns=list(spec.key_columns), reference_values=reference_values)
    return {r.rule.name: (r.rule.behaviour, r.failing_rows) for r in result.results[""]}


def _reference_values(home: Path, contract) -> dict[str, set]:
    from pipelines.quality import contract_metadata

    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return {ref.rule: {v for (v,) in con.execute(
                    f"SELECT DISTINCT {quote(ref.table_column)} FROM {quote(ref.table)}").fetchall()}
                for ref in contract_metadata(contract).get("references", [])}


@pytest.mark.parametrize("warehouse", ["one_day", pytest.param("defects", marks=pytest.mark.slow)])
def test_export_then_import_gives_equal_verdicts_on_the_real_data(warehouse, request, tmp_path):

    home = request.getfixturevalue(warehouse)
    documents = _export(home, tmp_path / "contracts")
    failing = 0
    for table, document in documents.items():
        spec = catalog[table]
        imported = import_contract(document, table)
        assert imported.untranslated == [], table
        path = tmp_path / f"{table.replace('.', '_')}.py"
        path.write_text(imported.source)
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[path.stem] = module  # pandera resolves a model's annotations in its module
        module_spec.loader.exec_module(module)
        model = getattr(module, class_name(table))
        assert [r.name for r in rules_of(model)] and {r.name for r in rules_of(model)} == \
            {r.name for r in rules_of(spec.contract)}, table
        references = _reference_values(home, spec.contract)
        before = _verdicts(home, spec.contract, spec, references)
        assert _verdicts(home, model, spec, references) == before, table
        failing += sum(1 for _, rows in before.values() if rows)
    assert failing >= 3  # the real data fails some rules (tail numbers, destinations, plane years, ...)


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True, timeout=60)


def test_contract_check_flags_breaking_changes_unless_the_version_is_bumped(tmp_path, capsys):
    repo = tmp_path / "repo"
    for part in ("assets", "checks"):
        shutil.copytree(REPO / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "contracts")
    checks = repo / "checks" / "flights.py"
    source = checks.read_text()

    def edit(old: str, new: str) -> None:
        nonlocal source
        assert source.count(old) == 1, old
        source = source.replace(old, new)
        checks.write_text(source)

    edit('    visib: Series[Float] = pa.Field(nullable=True, ge=0, description="Visibility, miles.")\n', "")  # removed
    edit("on_time_rate: Series[Float]", "on_time_rate: Series[Int]")  # DOUBLE -> BIGINT: narrowed
    edit('    name: Series[Str] = pa.Field(description="Full carrier name, trimmed.")\n',
         '    name: Series[Str] = pa.Field(description="Full carrier name, trimmed.")\n'
         '    alias: Series[Str] = pa.Field(nullable=True, description="Another name.")\n')  # optional: not breaking
    assert main(["contract", "check", "--against", "HEAD", "--repo", str(repo)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("BREAKING") and "staging.weather: column visib removed" in line for line in lines)
    assert any(line.startswith("BREAKING") and "marts.carrier_daily_performance: column on_time_rate type DOUBLE -> "
               "BIGINT (narrowed)" in line for line in lines)
    assert any(line.startswith("ok ") and "staging.airlines: optional column alias added" in line for line in lines)
    assert not any("staging.airlines" in line for line in lines if line.startswith("BREAKING"))

    # raising the major version of both breaking contracts lets them through
    edit('metadata = {"version": "1.0.0", "allow_empty": True, "monitors": {"skip_null_rate": WEATHER_NULLS}}',
         'metadata = {"version": "2.0.0", "allow_empty": True, "monitors": {"skip_null_rate": WEATHER_NULLS}}')
    edit('metadata = {"version": "1.0.0", "monitors": {"means": ["flights"],',
         'metadata = {"version": "2.0.0", "monitors": {"means": ["flights"],')
    assert main(["contract", "check", "--against", "HEAD", "--repo", str(repo)]) == 0
    out = capsys.readouterr().out
    assert "breaking (version bumped)  staging.weather: column visib removed  [1.0.0 -> 2.0.0]" in out


def test_no_secret_in_an_exported_server_block(home, tmp_path, monkeypatch):
    monkeypatch.setenv("PROVLINE_WAREHOUSE", "ducklake:postgres:dbname=lake host=db.internal port=5433 user=svc "
                                             "password='s3cr3t pw'")
    monkeypatch.setenv("PROVLINE_LAKE_DATA_PATH", str(tmp_path / "lake"))
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__AUTH__API_KEY", "ol-k3y-secret")
    monkeypatch.setenv("PROVLINE_ALERT_WEBHOOK_URL", "https://hooks.example/T0/B0/w3bh00k")
    assert main(["contract", "export", "--out", str(tmp_path / "contracts")]) == 0
    files = sorted((tmp_path / "contracts").glob("*.odcs.yaml"))
    assert len(files) == FLIGHTS_TABLES
    for path in files:
        text = path.read_text()
        for secret in ("s3cr3t", "password", "svc", "ol-k3y", "w3bh00k"):
            assert secret not in text, (path.name, secret)
    (server,) = load(files[0])["servers"]
    values = {p["property"]: p["value"] for p in server["customProperties"]}
    assert (server["type"], values["host"], values["port"], values["database"]) == ("custom", "db.internal", "5433",
                                                                                    "lake")


def test_the_contract_version_is_in_the_version_log_lineage_and_the_ui(one_day):
    from pipelines.definitions import defs

    with duckdb.connect(str(one_day / "warehouse.duckdb"), read_only=True) as con:
        versions = dict(con.execute("SELECT DISTINCT asset, contract_version FROM provline.version_log").fetchall())
    assert versions == {spec.table: spec.contract_version for spec in catalog}
    assert versions["staging.flights"] == "1.1.0" and versions["staging.weather"] == "1.0.0"
    events = [json.loads(line) for f in (one_day / "lineage").rglob("*.jsonl") for line in f.read_text().splitlines()]
    facets = [o["facets"]["dataContract"] for e in events if e["eventType"] == "COMPLETE" for o in e.get("outputs", [])
              if o["name"] == "staging.weather"]
    assert facets and all(f["version"] == "1.0.0" and f["_producer"] for f in facets)
    asset = next(a for a in defs.assets if a.key.path == ["staging", "weather"])
    metadata = asset.specs_by_key[asset.key].metadata
    assert metadata["contract_version"] == "1.0.0"
    assert metadata["contract_export"] == "provline contract export staging.weather --out contracts"


def test_an_old_version_log_gains_the_contract_version_column(home):
    from pipelines.warehouse.base import META_DDL

    home.mkdir(parents=True)
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:  # a warehouse from before the column
        con.execute(META_DDL.split("-- the contract version")[0])
        assert "contract_version" not in [c for (c, *_) in con.execute("DESCRIBE provline.version_log").fetchall()]
    with Warehouse.from_settings().connect() as con:
        assert "contract_version" in [c for (c, *_) in con.execute("DESCRIBE provline.version_log").fetchall()]


def test_import_lists_what_it_cannot_translate(tmp_path):
    foreign = {"apiVersion": "v3.1.0", "kind": "DataContract", "id": "x", "version": "0.3.0", "status": "draft",
               "schema": [{"name": "orders", "properties": [
                   {"name": "id", "logicalType": "integer", "required": True, "unique": True},
                   {"name": "status", "logicalType": "string",
                    "quality": [{"metric": "invalidValues", "arguments": {"validValues": ["new", "paid"]},
                                 "mustBe": 0}]},
                   {"name": "amount", "physicalType": "DOUBLE", "logicalTypeOptions": {"minimum": 0}}],
                   "quality": [{"id": "recent", "type": "sql", "query": "SELECT count(*) FROM orders", "mustBe": 0},
                               {"metric": "rowCount", "mustBeGreaterThan": 10}]}]}
    imported = import_contract(foreign, "sales.orders", origin="orders.yaml")
    assert [u.split(":")[0] for u in imported.untranslated] == ["recent", "rule_2"]
    namespace: dict = {}
    exec(compile(imported.source, "orders", "exec", dont_inherit=True), namespace)  # (no string annotations)
    schema = namespace["SalesOrders"].to_schema()
    assert schema.columns["id"].unique and not schema.columns["id"].nullable
    assert [c.name for c in schema.columns["status"].checks] == ["isin"] and schema.columns["status"].nullable
    assert [(c.name, c.statistics) for c in schema.columns["amount"].checks] == [
        ("greater_than_or_equal_to", {"min_value": 0})]
    with pytest.raises(ValueError, match="orders.yaml: no single schema object for sales.customers"):
        import_contract({**foreign, "schema": foreign["schema"] * 2}, "sales.customers", origin="orders.yaml")


def test_contract_commands_fail_clearly(home, tmp_path):
    with pytest.raises(SystemExit, match="no table 'staging.nope'"):
        main(["contract", "export", "staging.nope", "--out", str(tmp_path)])
    (tmp_path / "bad.yaml").write_text("kind: Something\n")
    with pytest.raises(SystemExit, match="bad.yaml: not an ODCS data contract"):
        main(["contract", "import", str(tmp_path / "bad.yaml"), "--table", "a.b"])
    with pytest.raises(SystemExit, match="git archive no-such-ref"):
        main(["contract", "check", "--against", "no-such-ref", "--repo", str(REPO)])


def test_a_warn_rule_is_not_a_schema_fact(one_day, tmp_path):
    """staging.planes.year is never null by a warn rule: 70 planes have none, kept. The document says so as a
    warning-severity nullValues rule, not as `required` (which datacontract-cli would fail)."""
    document = _export(one_day, tmp_path / "c", "staging.planes")["staging.planes"]
    year = next(p for p in document["schema"][0]["properties"] if p["name"] == "year")
    assert "required" not in year
    assert [(q.get("metric"), q["severity"]) for q in year["quality"]][0] == ("nullValues", "warning")
    assert len(list((tmp_path / "c").glob("*.yaml"))) == 1
    assert Path(REPO / "pipelines" / "contracts" / "odcs_spec" / "LICENSE").exists()
