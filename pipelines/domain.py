"""What a domain declares with: the one module `assets/<domain>/` and `checks/<domain>.py` import. A domain is
one team's pipeline — its tables (`production_asset`, a pandas function; `sql_asset`, a SQL file), their
sources, contracts' rule helpers, partitions, jobs, schedules and sensors. pipelines/definitions.py collects
every domain it finds and turns its tables into assets (pipelines/factory.py); the runtime knows no domain, and
a domain never imports the runtime.

    from pipelines.domain import Domain, Source, daily_partitions, daily_schedule, production_asset, sql_asset

    # assets/<domain>/__init__.py
    DAILY = daily_partitions("2024-01-01", last_day="2024-12-31")   # or last_day=None: still delivering
    domain = Domain("sales", tables=[...], jobs=[...], schedules=[daily_schedule(job, DAILY)],
                    owner="sales-data", contact="sales-data@example.com")

`owner` (a team) and `contact` are what its exported data contracts name as their team (pipelines/contracts/).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from types import ModuleType

import dagster as dg

from pipelines.monitor.landing import landing_zone_sensor
from pipelines.quality import QUARANTINE, WARN, acknowledge, reference, sql_check
from pipelines.sources import Source, package_data
from pipelines.spec import TableSpec, production_asset, sql_asset

__all__ = [
    "QUARANTINE", "WARN", "Domain", "Source", "TableSpec", "acknowledge", "daily_partitions", "daily_schedule",
    "domains_in", "landing_zone_sensor", "package_data", "production_asset", "reference", "sql_asset", "sql_check",
]


@dataclass(frozen=True)
class Domain:
    name: str
    tables: Sequence[TableSpec]
    jobs: Sequence[dg.UnresolvedAssetJobDefinition | dg.JobDefinition] = ()
    schedules: Sequence[dg.ScheduleDefinition] = ()
    sensors: Sequence[dg.SensorDefinition] = ()
    owner: str | None = None
    """The team that owns the domain's tables and answers for their contracts."""
    contact: str | None = None
    """How to reach that team (an e-mail or a channel)."""


def domains_in(package: ModuleType) -> list[Domain]:
    """The `domain` of each subpackage of `package` (assets/), in name order."""
    found = []
    for module in pkgutil.iter_modules(package.__path__):
        domain = getattr(importlib.import_module(f"{package.__name__}.{module.name}"), "domain", None)
        if isinstance(domain, Domain):
            found.append(domain)
    return found


def daily_partitions(first_day: str, last_day: str | None = None) -> dg.DailyPartitionsDefinition:
    """One partition per day from the data's first day. `last_day` (inclusive) for a source that no longer
    delivers; None for one still delivering: a new partition each day, open-ended."""
    end = (date.fromisoformat(last_day) + timedelta(days=1)).isoformat() if last_day else None
    return dg.DailyPartitionsDefinition(start_date=first_day, end_date=end)


def daily_schedule(
    job: dg.UnresolvedAssetJobDefinition, partitions: dg.DailyPartitionsDefinition, *, hour_of_day: int = 6,
    name: str | None = None, default_status: dg.DefaultScheduleStatus = dg.DefaultScheduleStatus.STOPPED,
) -> dg.ScheduleDefinition:
    """Each day at `hour_of_day`, build the previous day's partition — when the partitions have it. A tick
    before the first day or after the last skips, saying why; it never re-runs the last partition."""
    first = partitions.start.date()
    end = partitions.end.date() if partitions.end else None  # exclusive

    @dg.schedule(
        job=job, cron_schedule=f"0 {hour_of_day} * * *", name=name or f"{job.name}_schedule",
        execution_timezone=partitions.timezone, default_status=default_status,
        description=f"At {hour_of_day:02d}:00, materializes the previous day's partition of {job.name}.",
    )
    def _schedule(context: dg.ScheduleEvaluationContext):
        day = context.scheduled_execution_time.date() - timedelta(days=1)
        if day < first:
            return dg.SkipReason(f"{day} is before the first partition, {first}: nothing to build yet")
        if end is not None and day >= end:
            return dg.SkipReason(f"{day} is after the last partition, {end - timedelta(days=1)} (the data's last "
                                 "day): nothing to build; the last partition is not re-run")
        return dg.RunRequest(run_key=day.isoformat(), partition_key=day.isoformat())

    return _schedule
