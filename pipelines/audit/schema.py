"""Validating OpenLineage RunEvents before they enter the lineage store.

Two layers:
- structural (built in, always): done in DuckDB over a whole batch (store.py, `STRUCTURAL_PROBLEM`):
  valid JSON object, only the spec's top-level fields, eventType in the enum, eventTime an RFC 3339
  timestamp with an offset, run.runId a UUID, job/inputs/outputs shaped as the spec says, every facet an
  object with _producer and _schemaURL.
- official schema (jsonschema, a runtime dependency, against the spec files shipped in the package:
  `openlineage_spec/`): each event against the spec's RunEvent, and each standard facet against its own
  schema (matched by the file name in its _schemaURL, as ../shared/bin/ol-validate does). Facet checks
  are memoized by content: our events repeat the same schema/sql/jobType facets run after run, and a
  facet's validity depends on its content only.

Tests validate events with `official_schema().problems(event)` (empty when valid).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

SPEC_DIR = Path(__file__).resolve().parent / "openlineage_spec"

TOP_LEVEL_FIELDS = ("eventTime", "eventType", "producer", "schemaURL", "run", "job", "inputs", "outputs")
EVENT_TYPES = ("START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER")


class OfficialSchema:
    """The official OpenLineage schemas, compiled once."""

    def __init__(self, spec_dir: Path = SPEC_DIR):
        # imported here: ~0.1 s that the query commands, which never validate, need not pay
        from jsonschema import Draft202012Validator
        from referencing import Registry, Resource

        resources, self._by_name = [], {}
        for path in [spec_dir / "OpenLineage.json", *sorted((spec_dir / "facets").glob("*.json"))]:
            doc = json.loads(path.read_text())
            resources.append((doc["$id"], Resource.from_contents(doc)))
            self._by_name[path.stem] = doc
        self._registry = Registry().with_resources(resources)
        self._validator_cls = Draft202012Validator
        root = self._by_name["OpenLineage"]["$id"]
        self._event = Draft202012Validator({"$ref": f"{root}#/$defs/RunEvent"}, registry=self._registry)
        self._facet_validators: dict[str, Any] = {}
        self._facet_memo: dict[str, list[str]] = {}

    def _facet_validator(self, name: str, definition: str):
        key = f"{name}#{definition}"
        if key not in self._facet_validators:
            doc = self._by_name[name]
            self._facet_validators[key] = self._validator_cls(
                {"$ref": f"{doc['$id']}#/$defs/{definition}"}, registry=self._registry)
        return self._facet_validators[key]

    def problems(self, event: dict) -> list[str]:
        """Every way the event breaks the official schema (empty when valid)."""
        stripped, facets = _strip_facets(event)
        out = [f"{'/'.join(map(str, e.absolute_path)) or 'event'}: {e.message[:200]}"
               for e in self._event.iter_errors(stripped)]
        for where, key, facet in facets:
            out.extend(f"{where}.{key}: {p}" for p in self._facet_problems(facet))
        return out

    def _facet_problems(self, facet: Any) -> list[str]:
        if not isinstance(facet, dict) or "_producer" not in facet or "_schemaURL" not in facet:
            return ["a facet needs _producer and _schemaURL"]
        memo_key = json.dumps(facet, sort_keys=True)
        if memo_key in self._facet_memo:
            return self._facet_memo[memo_key]
        url = str(facet["_schemaURL"])
        name = url.split("#")[0].rsplit("/", 1)[-1].removesuffix(".json")
        problems: list[str] = []
        if name in self._by_name and name != "OpenLineage":
            definition = url.split("#/$defs/")[-1] if "#/$defs/" in url else name
            try:
                validator = self._facet_validator(name, definition)
                problems = [f"({name}) {'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
                            for e in validator.iter_errors(facet)]
            except Exception as error:  # noqa: BLE001 - an unresolvable $defs is the event's problem
                problems = [f"({name}) cannot check against {definition}: {error}"]
        self._facet_memo[memo_key] = problems
        return problems


_STUB = {"_producer": "https://stub.invalid/", "_schemaURL": "https://stub.invalid/#/$defs/BaseFacet"}


def _strip_facets(event: dict) -> tuple[dict, list[tuple[str, str, Any]]]:
    """The event with each facet replaced by a valid stub (the envelope check), and the facets (checked
    one by one, memoized)."""
    facets: list[tuple[str, str, Any]] = []

    def take(where: str, group: Any) -> Any:
        if not isinstance(group, dict):
            return group
        facets.extend((where, k, v) for k, v in group.items())
        return {k: dict(_STUB) if isinstance(v, dict) else v for k, v in group.items()}

    out = dict(event)
    for part in ("run", "job"):
        if isinstance(event.get(part), dict) and "facets" in event[part]:
            out[part] = {**event[part], "facets": take(part, event[part]["facets"])}
    for side in ("inputs", "outputs"):
        if isinstance(event.get(side), list):
            datasets = []
            for ds in event[side]:
                if isinstance(ds, dict):
                    ds = dict(ds)
                    where = f"{side}[{ds.get('name')}]"
                    for group in ("facets", "inputFacets", "outputFacets"):
                        if group in ds:
                            ds[group] = take(where, ds[group])
                datasets.append(ds)
            out[side] = datasets
    return out, facets


@functools.cache
def official_schema() -> OfficialSchema:
    """The official schemas shipped in the package, compiled once per process."""
    return OfficialSchema()
