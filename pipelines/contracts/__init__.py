"""Data contracts that travel: each table's pandera contract as an Open Data Contract Standard (ODCS v3.1.0)
document, and back.

    export   odcs.py      a table's contract and spec -> an ODCS document (the mapping is documented there)
    validate validate.py  the document against the standard's JSON schema (shipped in odcs_spec/)
    import   importer.py  an ODCS document -> the source of a pandera contract, and the rules it could not read
    check    changes.py   the contracts of the working tree against those at a git ref: breaking or not

`provline contract export|import|check` (cli.py) are the commands; datacontract-cli tests the exported
documents against a built warehouse (`datacontract test`). The package itself imports only YAML: every
`provline` command builds the parser that names these (pandera and the warehouse load when one runs).
"""

from __future__ import annotations

from pathlib import Path

import yaml

__all__ = ["contract_file", "dump", "load"]


def contract_file(folder: Path, table: str) -> Path:
    return folder / f"{table}.odcs.yaml"


def dump(document: dict) -> str:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=120)


def load(path: Path) -> dict:
    """An ODCS document from a YAML (or JSON) file; a clear error naming the file when it is not one."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: not a readable YAML document: {error}") from None
    if not isinstance(document, dict) or document.get("kind") != "DataContract":
        raise ValueError(f"{path}: not an ODCS data contract (no `kind: DataContract`)")
    return document
