"""How provline names things in OpenLineage.

Datasets
- Warehouse tables: namespace ``duckdb://<warehouse name>``, name ``<schema>.<table>``.
  The namespace is the logical warehouse name (PROVLINE_WAREHOUSE_NAME), never a file path,
  so the same table has the same identity on every machine and in every PROVLINE_HOME.
- DuckLake tables (PROVLINE_WAREHOUSE=ducklake:postgres:...): namespace
  ``ducklake://<host>:<port>/<catalog database>``, name ``<schema>.<table>``. The OpenLineage naming
  spec has no entry for DuckLake. Its rule is namespace = the data source (``scheme://authority``),
  name = the dataset within it; for a lake the data source is its catalog: every host that attaches
  the same PostgreSQL database sees the same tables, whatever its data path looks like locally. So
  the scheme says it is a DuckLake (not ``postgres://``: the catalog database holds DuckLake's metadata
  tables, not ``raw.orders``, and a PostgreSQL integration would name those), the authority is the
  catalog server's host and port as the spec does for PostgreSQL, and the catalog database follows as
  a path, as the spec's Azure Cosmos DB namespace carries its database (``azurecosmos://host/dbs/db``).
  The name stays ``<schema>.<table>``, so a table has the same name on both backends and the audit
  queries take the same arguments. Use the same host name for the catalog on every machine (the
  spec's advice for any host-based namespace). Never the user or password.
- Source files: the OpenLineage naming spec for a local file system: namespace ``file``, name =
  the absolute path (``openlineage.client.naming.dataset.LocalFileSystem``).

Jobs
- Asset runs: namespace = PROVLINE_LINEAGE_NAMESPACE (default ``provline``), name = the asset key
  as a dotted path (``marts.flight_facts``).
- The Dagster run: same namespace, name = the Dagster job name.

Run ids are UUIDv5: a pure function of the Dagster run id (+ asset key, partition, attempt), so
re-emitting an event is idempotent and a retry (new attempt) is a new OpenLineage run.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from openlineage.client.naming.dataset import LocalFileSystem

# Fixed namespace for provline's UUIDv5 run ids; never change it (ids would change with it).
RUN_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/provline/provline/run-id")


def warehouse_namespace(warehouse_name: str) -> str:
    return f"duckdb://{warehouse_name}"


def table_name(name: str) -> str:
    """``marts/flight_facts`` or ``marts.flight_facts`` -> ``marts.flight_facts``."""
    return name.replace("/", ".")


def job_name(asset_key: str) -> str:
    return table_name(asset_key)


def file_dataset(path: str | Path) -> tuple[str, str]:
    """(namespace, name) of a local source file."""
    naming = LocalFileSystem(path=str(Path(path).resolve()))
    return naming.get_namespace(), naming.get_name()


def dagster_run_id(dagster_run_id: str) -> str:
    """The OpenLineage run id of a Dagster run (the parent of its asset runs)."""
    return str(uuid.uuid5(RUN_ID_NAMESPACE, f"dagster-run/{dagster_run_id}"))


def asset_run_id(dagster_run_id: str, asset_key: str, partition: str | None, attempt: int) -> str:
    """The OpenLineage run id of one (asset, partition, attempt) inside a Dagster run."""
    key = "\x1f".join(["asset-run", dagster_run_id, job_name(asset_key), partition or "", str(attempt)])
    return str(uuid.uuid5(RUN_ID_NAMESPACE, key))
