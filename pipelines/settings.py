"""Every provline setting, in one place.

Settings come from environment variables with defaults; nothing else in the project reads
``os.environ``. ``get_settings()`` reads the environment on each call, so tests (and a
long-lived ``dagster dev``) see a changed PROVLINE_HOME without a restart.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    """Secret-bearing settings (a webhook URL, a conninfo that may hold a password) are left out of its repr, so a
    logged or printed Settings never shows them."""

    home: Path
    """PROVLINE_HOME: holds the warehouse, the lineage log, the outbox and the snapshots."""
    source_dir: Path | None
    """PROVLINE_SOURCE_DIR: read `<table>.csv` / `<table>.parquet` from here instead of the domains' own data."""
    warehouse_url: str = field(repr=False)  # (a conninfo may hold a password)
    """PROVLINE_WAREHOUSE: the warehouse backend, `duckdb` (a file under PROVLINE_HOME) or
    `ducklake:postgres:<libpq conninfo>` (DuckLake with its catalog in that PostgreSQL database)."""
    lake_data_path: str
    """PROVLINE_LAKE_DATA_PATH: DuckLake's data files: a folder every host sees at the same path, or an
    object-store prefix (`s3://bucket/prefix/`)."""
    warehouse_name: str
    """PROVLINE_WAREHOUSE_NAME: the DuckDB file stem, also the OpenLineage dataset namespace."""
    lock_timeout_s: float
    """PROVLINE_LOCK_TIMEOUT_S: how long a step waits for the warehouse writer lock."""
    lineage_namespace: str
    """PROVLINE_LINEAGE_NAMESPACE: the OpenLineage job namespace."""
    lineage_timeout_s: float
    """PROVLINE_LINEAGE_TIMEOUT_S: the HTTP timeout of one delivery attempt (emission itself never waits on a
    remote backend: events for it go through the outbox and a background thread)."""
    lineage_exit_wait_s: float
    """PROVLINE_LINEAGE_EXIT_WAIT_S: the most a process waits at exit for its lineage outbox to drain; what is
    left stays in the outbox for the next process or `provline lineage replay`."""
    lineage_replay_budget_s: float
    """PROVLINE_LINEAGE_REPLAY_BUDGET_S: how long `provline lineage replay` keeps retrying refused events."""
    snapshot_retention_days: int
    """PROVLINE_SNAPSHOT_RETENTION_DAYS: how long version snapshots are kept for `provline verify`."""
    dagster_home: Path | None
    """DAGSTER_HOME: Dagster's instance; `provline run` records its runs there when set."""
    range_chunk_rows: int
    """PROVLINE_RANGE_CHUNK_ROWS: a range of partitions is built in chunks of whole days holding at most about this
    many rows (a day is never split: one bigger than this is a chunk of its own). Bounds a step's memory."""
    checks_per_run: bool
    """PROVLINE_CHECKS_PER_RUN: a range run reports each Dagster asset check once for the run (its metadata lists
    the partitions that failed and why) instead of once per partition. Per-partition verdicts stay in
    quality.check_results, OpenLineage and `provline health`; blocking stays per partition. Off by default."""
    memory_limit: str
    """PROVLINE_MEMORY_LIMIT: DuckDB's memory limit for each database a process opens (the warehouse's connection,
    the scratch database that validates); past it DuckDB spills to PROVLINE_HOME/spill."""
    allow_failed_upstream: bool
    """PROVLINE_ALLOW_FAILED_UPSTREAM: build even when an upstream partition's latest blocking check
    failed (the override of cross-run blocking; the run tag provline/allow_failed_upstream=true does
    the same for one run)."""
    landing_dir: Path | None
    """PROVLINE_LANDING_DIR: daily files arrive here as `<source>/<YYYY-MM-DD>.csv|parquet`; when set, the
    partitioned source tables read each day from here (pipelines/monitor/landing.py)."""
    landing_settle_s: float
    """PROVLINE_LANDING_SETTLE_S: a landing file is read only once it has not changed for this long and
    since the sensor's previous tick (a file still being written is left alone)."""
    alert_webhook_url: str | None = field(repr=False)  # (the URL is the credential)
    """PROVLINE_ALERT_WEBHOOK_URL: Slack-compatible incoming webhook for alerts (a secret: never logged)."""
    alert_timeout_s: float
    """PROVLINE_ALERT_TIMEOUT_S: the HTTP timeout of one alert delivery attempt, and the most a process
    waits at exit for its alerts."""
    alert_max_attempts: int
    """PROVLINE_ALERT_MAX_ATTEMPTS: attempts per alert before it is recorded as undelivered."""
    alert_window_s: float
    """PROVLINE_ALERT_WINDOW_S: an alert repeated for the same (asset, partition, check) within this window
    is not sent again."""
    outbox_alert_threshold: int
    """PROVLINE_OUTBOX_ALERT_THRESHOLD: alert when more lineage events than this wait in the outbox."""
    health_partitions: int
    """PROVLINE_HEALTH_PARTITIONS: how many of an asset's latest partitions `provline health` sums up."""

    @property
    def spill_dir(self) -> Path:
        """Where DuckDB spills what does not fit in PROVLINE_MEMORY_LIMIT."""
        return self.home / "spill"

    @property
    def lineage_dir(self) -> Path:
        return self.home / "lineage"

    @property
    def outbox_dir(self) -> Path:
        return self.home / "outbox"

    @property
    def lineage_store_path(self) -> Path:
        return self.home / "lineage.duckdb"

    @property
    def alerts_path(self) -> Path:
        return self.home / "alerts.duckdb"


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _path(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value).resolve() if value else None


def get_settings() -> Settings:
    return Settings(
        home=Path(_env("PROVLINE_HOME", ".provline")).resolve(),
        source_dir=_path("PROVLINE_SOURCE_DIR"),
        warehouse_url=_env("PROVLINE_WAREHOUSE", "duckdb"),
        lake_data_path=_env("PROVLINE_LAKE_DATA_PATH", ""),
        warehouse_name=_env("PROVLINE_WAREHOUSE_NAME", "warehouse"),
        lock_timeout_s=float(_env("PROVLINE_LOCK_TIMEOUT_S", "600")),
        lineage_namespace=_env("PROVLINE_LINEAGE_NAMESPACE", "provline"),
        lineage_timeout_s=float(_env("PROVLINE_LINEAGE_TIMEOUT_S", "2")),
        lineage_exit_wait_s=float(_env("PROVLINE_LINEAGE_EXIT_WAIT_S", "0.5")),
        lineage_replay_budget_s=float(_env("PROVLINE_LINEAGE_REPLAY_BUDGET_S", "120")),
        snapshot_retention_days=int(_env("PROVLINE_SNAPSHOT_RETENTION_DAYS", "90")),
        dagster_home=Path(os.environ["DAGSTER_HOME"]) if os.environ.get("DAGSTER_HOME") else None,
        range_chunk_rows=int(_env("PROVLINE_RANGE_CHUNK_ROWS", "1000000")),
        checks_per_run=_env("PROVLINE_CHECKS_PER_RUN", "false").lower() in ("1", "true", "yes"),
        memory_limit=_env("PROVLINE_MEMORY_LIMIT", "1GB"),
        allow_failed_upstream=_env("PROVLINE_ALLOW_FAILED_UPSTREAM", "false").lower() in ("1", "true", "yes"),
        landing_dir=_path("PROVLINE_LANDING_DIR"),
        landing_settle_s=float(_env("PROVLINE_LANDING_SETTLE_S", "10")),
        alert_webhook_url=os.environ.get("PROVLINE_ALERT_WEBHOOK_URL", "").strip() or None,
        alert_timeout_s=float(_env("PROVLINE_ALERT_TIMEOUT_S", "2")),
        alert_max_attempts=int(_env("PROVLINE_ALERT_MAX_ATTEMPTS", "5")),
        alert_window_s=float(_env("PROVLINE_ALERT_WINDOW_S", "21600")),
        outbox_alert_threshold=int(_env("PROVLINE_OUTBOX_ALERT_THRESHOLD", "1000")),
        health_partitions=int(_env("PROVLINE_HEALTH_PARTITIONS", "7")),
    )


def is_set(name: str) -> bool:
    """Whether the environment sets the variable `name` (not empty): resources name it (Dagster's EnvVar), so the UI
    shows which variable a value comes from, never the value."""
    return bool(os.environ.get(name, "").strip())


def openlineage_environment() -> dict[str, str]:
    """The OPENLINEAGE_* variables, for the OpenLineage client's own config loader."""
    return {k: v for k, v in os.environ.items() if k.startswith("OPENLINEAGE")}
