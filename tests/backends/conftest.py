"""A real PostgreSQL server for the DuckLake and Dagster-on-PostgreSQL tests: one throwaway cluster per
test session (tests/backends/pgcluster.py), one catalog database per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines.warehouse import ducklake
from tests.conftest import require

from .pgcluster import PgCluster, has_server, pg_cluster, pgbouncer_binary


def require_postgres() -> None:
    require("PostgreSQL", has_server(), "apt-get install -y postgresql (its server binaries: initdb, pg_ctl)")


def require_pgbouncer() -> None:
    require("PgBouncer", pgbouncer_binary() is not None, "apt-get install -y pgbouncer")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PgCluster]:
    require_postgres()
    with pg_cluster() as pg:
        pg.create_role("provline")
        yield pg


@dataclass
class Lake:
    pg: PgCluster
    database: str
    data_path: Path

    @property
    def conninfo(self) -> str:
        return self.pg.conninfo(self.database, "provline")

    @property
    def url(self) -> str:
        return ducklake.PREFIX + self.conninfo

    def env(self) -> dict[str, str]:
        return {"PROVLINE_WAREHOUSE": self.url, "PROVLINE_LAKE_DATA_PATH": str(self.data_path)}


def new_lake(pg: PgCluster, data_path: Path) -> Lake:
    database = "lake_" + uuid.uuid4().hex[:8]
    pg.create_database(database, owner="provline")
    return Lake(pg, database, data_path)


@pytest.fixture
def lake(postgres_server: PgCluster, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lake]:
    """An empty DuckLake (its own catalog database, data under tmp) as this test's warehouse."""
    made = new_lake(postgres_server, tmp_path / "lake-data")
    for name, value in made.env().items():
        monkeypatch.setenv(name, value)
    yield made
    ducklake.close_all()
