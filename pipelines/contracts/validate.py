"""Validating an ODCS document against the standard's JSON schema, shipped in the package (odcs_spec/)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

SCHEMA_PATH = Path(__file__).resolve().parent / "odcs_spec" / "odcs-3.1.0.schema.json"


@functools.cache
def _validator():
    from jsonschema import Draft201909Validator  # the schema's own $schema

    return Draft201909Validator(json.loads(SCHEMA_PATH.read_text()))


def schema_problems(document: dict) -> list[str]:
    """Every way `document` breaks the ODCS v3.1.0 JSON schema, each with its path (empty when valid)."""
    return [f"{'/'.join(map(str, error.absolute_path)) or '(document)'}: {error.message}"
            for error in sorted(_validator().iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))]
