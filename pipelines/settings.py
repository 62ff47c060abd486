"""Every provline setting, in one place: the `Settings` resource.

Settings come from environment variables with defaults; nothing else in the project reads ``os.environ``.
A step gets them as the `settings` resource of the Definitions (`Settings.from_environment()`: each variable the
environment sets is Dagster's EnvVar of it, so the UI names the variable, never a secret's value). The edges, which
no resource reaches (the CLI, the run-level lineage of the executor, a resource's default), call
``get_settings()``, which reads the environment on each call, so tests (and a long-lived ``dagster dev``) see a
changed PROVLINE_HOME without a restart.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import Field


class Settings(dg.ConfigurableResource):
    """Secret-bearing settings (a webhook URL, a conninfo that may hold a password) are left out of its repr, so a
    logged or printed Settings never shows them. Folders are given as text (a resource's config); the properties
    below give them as resolved paths."""

    provline_home: str = ".provline"
    """PROVLINE_HOME: holds the warehouse, the lineage log, the outbox and the snapshots."""
    source_dir: str | None = None
    """PROVLINE_SOURCE_DIR: read `<table>.csv` / `<table>.parquet` from here instead of the domains' own data."""
    warehouse_url: str = Field(default="duckdb", repr=False)  # (a conninfo may hold a password)
    """PROVLINE_WAREHOUSE: the warehouse backend, `duckdb` (a file under PROVLINE_HOME) or
    `ducklake:postgres:<libpq conninfo>` (DuckLake with its catalog in that PostgreSQL database)."""
    lake_data_path: str = ""
    """PROVLINE_LAKE_DATA_PATH: DuckLake's data files: a folder every host sees at the same path, or an
    object-store prefix (`s3://bucket/prefix/`)."""
    warehouse_name: str = "warehouse"
    """PROVLINE_WAREHOUSE_NAME: the DuckDB file stem, also the OpenLineage dataset namespace."""
    lock_timeout_s: float = 600.0
    """PROVLINE_LOCK_TIMEOUT_S: how long a step waits for the warehouse writer lock."""
    lineage_namespace: str = "provline"
    """PROVLINE_LINEAGE_NAMESPACE: the OpenLineage job namespace."""
    lineage_timeout_s: float = 2.0
    """PROVLINE_LINEAGE_TIMEOUT_S: the HTTP timeout of one delivery attempt (emission itself never waits on a
    remote backend: events for it go through the outbox and a background thread)."""
    lineage_exit_wait_s: float = 0.5
    """PROVLINE_LINEAGE_EXIT_WAIT_S: the most a process waits at exit for its lineage outbox to drain; what is
    left stays in the outbox for the next process or `provline lineage replay`."""
    lineage_replay_budget_s: float = 120.0
    """PROVLINE_LINEAGE_REPLAY_BUDGET_S: how long `provline lineage replay` keeps retrying refused events."""
    snapshot_retention_days: int = 90
    """PROVLINE_SNAPSHOT_RETENTION_DAYS: how long version snapshots are kept for `provline verify`."""
    range_chunk_rows: int = 1_000_000
    """PROVLINE_RANGE_CHUNK_ROWS: a range of partitions is built in chunks of whole days holding at most about this
    many rows (a day is never split: one bigger than this is a chunk of its own). Bounds a step's memory."""
    checks_per_run: bool = False
    """PROVLINE_CHECKS_PER_RUN: a range run reports each Dagster asset check once for the run (its metadata lists
    the partitions that failed and why) instead of once per partition. Per-partition verdicts stay in
    quality.check_results, OpenLineage and `provline health`; blocking stays per partition. Off by default."""
    memory_limit: str = "1GB"
    """PROVLINE_MEMORY_LIMIT: DuckDB's memory limit for each database a process opens (the warehouse's connection,
    the scratch database that validates); past it DuckDB spills to PROVLINE_HOME/spill."""
    allow_failed_upstream: bool = False
    """PROVLINE_ALLOW_FAILED_UPSTREAM: build even when an upstream partition's latest blocking check
    failed (the override of cross-run blocking; the run tag provline/allow_failed_upstream=true does
    the same for one run)."""
    landing_dir: str | None = None
    """PROVLINE_LANDING_DIR: daily files arrive here as `<source>/<YYYY-MM-DD>.csv|parquet`; when set, the
    partitioned source tables read each day from here (pipelines/monitor/landing.py)."""
    landing_settle_s: float = 10.0
    """PROVLINE_LANDING_SETTLE_S: a landing file is read only once it has not changed for this long and
    since the sensor's previous tick (a file still being written is left alone)."""
    alert_webhook_url: str | None = Field(default=None, repr=False)  # (the URL is the credential)
    """PROVLINE_ALERT_WEBHOOK_URL: Slack-compatible incoming webhook for alerts (a secret: never logged)."""
    alert_timeout_s: float = 2.0
    """PROVLINE_ALERT_TIMEOUT_S: the HTTP timeout of one alert delivery attempt, and the most a process
    waits at exit for its alerts."""
    alert_max_attempts: int = 5
    """PROVLINE_ALERT_MAX_ATTEMPTS: attempts per alert before it is recorded as undelivered."""
    alert_window_s: float = 21600.0
    """PROVLINE_ALERT_WINDOW_S: an alert repeated for the same (asset, partition, check) within this window
    is not sent again."""
    outbox_alert_threshold: int = 1000
    """PROVLINE_OUTBOX_ALERT_THRESHOLD: alert when more lineage events than this wait in the outbox."""
    health_partitions: int = 7
    """PROVLINE_HEALTH_PARTITIONS: how many of an asset's latest partitions `provline health` sums up."""

    @classmethod
    def from_environment(cls) -> Settings:
        """The resource of the code location's Definitions: a text or whole-number setting the environment sets is
        Dagster's EnvVar of its variable (the UI shows the variable's name; a step reads the value when it runs);
        the others are their values now."""
        now = get_settings()
        return cls(**{field: named(variable, getattr(now, field)) for field, variable in VARIABLES.items()})

    @property
    def home(self) -> Path:
        return Path(self.provline_home).resolve()

    @property
    def source_folder(self) -> Path | None:
        return Path(self.source_dir).resolve() if self.source_dir else None

    @property
    def landing_folder(self) -> Path | None:
        return Path(self.landing_dir).resolve() if self.landing_dir else None

    @property
    def spill_dir(self) -> Path:
        """Where DuckDB spills what does not fit in PROVLINE_MEMORY_LIMIT."""
        return self.home / "spill"

    @property
    def source_cache_dir(self) -> Path:
        """Parsed copies of CSV sources, kept as Parquet (pipelines/sources.py)."""
        return self.home / "cache" / "sources"

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


VARIABLES = {
    "provline_home": "PROVLINE_HOME", "source_dir": "PROVLINE_SOURCE_DIR", "warehouse_url": "PROVLINE_WAREHOUSE",
    "lake_data_path": "PROVLINE_LAKE_DATA_PATH", "warehouse_name": "PROVLINE_WAREHOUSE_NAME",
    "lock_timeout_s": "PROVLINE_LOCK_TIMEOUT_S", "lineage_namespace": "PROVLINE_LINEAGE_NAMESPACE",
    "lineage_timeout_s": "PROVLINE_LINEAGE_TIMEOUT_S", "lineage_exit_wait_s": "PROVLINE_LINEAGE_EXIT_WAIT_S",
    "lineage_replay_budget_s": "PROVLINE_LINEAGE_REPLAY_BUDGET_S",
    "snapshot_retention_days": "PROVLINE_SNAPSHOT_RETENTION_DAYS", "range_chunk_rows": "PROVLINE_RANGE_CHUNK_ROWS",
    "checks_per_run": "PROVLINE_CHECKS_PER_RUN", "memory_limit": "PROVLINE_MEMORY_LIMIT",
    "allow_failed_upstream": "PROVLINE_ALLOW_FAILED_UPSTREAM", "landing_dir": "PROVLINE_LANDING_DIR",
    "landing_settle_s": "PROVLINE_LANDING_SETTLE_S", "alert_webhook_url": "PROVLINE_ALERT_WEBHOOK_URL",
    "alert_timeout_s": "PROVLINE_ALERT_TIMEOUT_S", "alert_max_attempts": "PROVLINE_ALERT_MAX_ATTEMPTS",
    "alert_window_s": "PROVLINE_ALERT_WINDOW_S", "outbox_alert_threshold": "PROVLINE_OUTBOX_ALERT_THRESHOLD",
    "health_partitions": "PROVLINE_HEALTH_PARTITIONS",
}
"""Each setting's environment variable (the field names say what it is; the variables are what users set)."""


def get_settings(**overrides) -> Settings:
    """The settings the environment gives now (a variable set to an empty value is unset), with `overrides` (fields
    by name) over them. Pydantic reads the values: `true`/`1`/`yes` for a flag, a number for a number; a bad value
    is named with its field."""
    return Settings(**{field: os.environ[variable].strip() for field, variable in VARIABLES.items()
                       if is_set(variable)} | overrides)


def dagster_home() -> Path | None:
    """DAGSTER_HOME: Dagster's instance; `provline run` records its runs there when set."""
    value = os.environ.get("DAGSTER_HOME", "").strip()
    return Path(value) if value else None


def named(variable: str, value):
    """For a resource's field: Dagster's EnvVar of `variable` where the environment sets it and Dagster can name it
    (text and whole numbers), so the UI shows the variable, never its value; `value` otherwise."""
    if not is_set(variable) or isinstance(value, bool | float):
        return value
    return dg.EnvVar.int(variable) if isinstance(value, int) else dg.EnvVar(variable)


def is_set(name: str) -> bool:
    """Whether the environment sets the variable `name` (not empty): resources name it (Dagster's EnvVar), so the UI
    shows which variable a value comes from, never the value."""
    return bool(os.environ.get(name, "").strip())


def openlineage_environment() -> dict[str, str]:
    """The OPENLINEAGE_* variables, for the OpenLineage client's own config loader."""
    return {k: v for k, v in os.environ.items() if k.startswith("OPENLINEAGE")}
