"""The OpenLineage JSON schemas ship inside the package: every install validates events the same way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pipelines.audit.schema import SPEC_DIR, OfficialSchema, official_schema

from .conftest import Audited

REPO = Path(__file__).resolve().parents[2]


def test_the_package_build_ships_the_spec_its_license_and_the_report_template(tmp_path: Path):
    # build_py is the step that puts packages and their package data into a wheel
    subprocess.run([sys.executable, "-c", "from setuptools import setup; setup()", "-q", "build_py",
                    "--build-lib", str(tmp_path)], cwd=REPO, check=True, capture_output=True)
    built = tmp_path / "pipelines" / "audit"
    spec = built / "openlineage_spec"
    assert {"OpenLineage.json", "LICENSE", "README.md"} <= {p.name for p in spec.iterdir()}
    assert "Apache License" in (spec / "LICENSE").read_text()
    facets = sorted(p.name for p in (spec / "facets").glob("*.json"))
    assert len(facets) > 30 and facets == sorted(p.name for p in (SPEC_DIR / "facets").glob("*.json"))
    assert (built / "templates" / "report.html").is_file()
    # the built copy validates on its own
    event = {"eventTime": "2013-01-14T06:00:00+00:00", "eventType": "START", "producer": "https://example.com/p",
             "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
             "run": {"runId": "0b9cbc4f-3a30-4a7b-9e3a-2b1c0e2a6f11"}, "job": {"namespace": "ns", "name": "j"}}
    assert OfficialSchema(spec).problems(event) == []
    assert OfficialSchema(spec).problems({**event, "eventType": "DONE"})


def test_every_event_the_pipeline_emitted_is_valid_against_the_packaged_schemas(audited: Audited):
    lines = (audited.home / "lineage" / "events.jsonl").read_text().splitlines()
    assert len(lines) == 2 * (13 + 7) + 3  # 13 assets, the 7 of the flights group again, 3 Dagster runs' STARTs
    assert {n: p for n, line in enumerate(lines, 1) if (p := official_schema().problems(json.loads(line)))} == {}
