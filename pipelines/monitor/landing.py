"""The landing zone: daily files that arrive under PROVLINE_LANDING_DIR as `<source>/<YYYY-MM-DD>.csv` (or
`.parquet`), one per partitioned source table and day, with the columns of the whole source file.

Where a partitioned source table reads a day from (`pipelines.sources.read_landed`, called by the factory):
- PROVLINE_LANDING_DIR unset: the whole source file — `<source>.csv|parquet` in PROVLINE_SOURCE_DIR, or the
  domain's packaged data — cut to the days being built.
- PROVLINE_LANDING_DIR set: that day's landing file (each day's, for a range), whoever starts the run: the
  landing-zone sensor, the daily schedule, `provline run`, the UI. A day without its file fails, naming the
  path it expected. The reference (unpartitioned) tables still read their whole file.

`landing_zone_sensor` requests the run of a partition once every landing source of its job has a file for
that day, with a run key that includes the files' content hashes: the same files never run twice, a changed
file runs again. A file is only read once it has stopped changing (same size and modification time as at the
previous tick, and older than PROVLINE_LANDING_SETTLE_S): a file still being written is left alone. Writers
may also write `.<name>` or `<name>.tmp`/`.part` and rename: those names are ignored.

A file that cannot be loaded is moved to `<landing>/rejected/<source>/` with `<name>.reason` beside it, and
an alert is raised; nothing from it is loaded:
- a name that is not `<YYYY-MM-DD>.csv|parquet` (a copy such as `2024-05-01 (1).csv`);
- a day outside the partitions;
- a second file for a day that already has one (`2024-05-01.parquet` beside `2024-05-01.csv`: the newer
  one is rejected);
- a file that cannot be read as its contract says (a column missing, a value that does not parse), or with a
  column the contract does not have (a changed delivery is held back for a person to look at, where a whole
  source file's extra columns are dropped with a warning);
- rows dated another day than the file's name (a copy of another day's file under this day's name).

`seed` splits a domain's source tables into daily landing files (`provline landing seed`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import pandas as pd

from pipelines.monitor import alerts
from pipelines.settings import Settings
from pipelines.sources import (
    DAY_FILE_SUFFIXES,
    SourceError,
    partition_keys,
    read_day,
    read_file,
    read_source,
    source_path,
)

if TYPE_CHECKING:
    from pipelines.spec import TableSpec

DAY_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.(csv|parquet)$")
REJECTED = "rejected"
RUN_TAG = "provline/landing"


def landing_sources(specs: Sequence[TableSpec]) -> list[TableSpec]:
    """The tables fed by daily landing files: the partitioned tables that read a source."""
    return [spec for spec in specs if spec.partitioned and spec.source is not None]


def _ignored(name: str) -> bool:
    """A file still being written under a temporary name."""
    return name.startswith(".") or name.endswith((".tmp", ".part"))


# --- the sensor ----------------------------------------------------------------------------------


@dataclass
class Cursor:
    """What the sensor remembers between ticks (Dagster keeps it as the sensor's cursor)."""

    seen: dict[str, list[int]] = field(default_factory=dict)  # file -> [size, mtime_ns] at the last tick
    checked: dict[str, list] = field(default_factory=dict)  # file -> [size, mtime_ns, md5] of a loadable file
    requested: dict[str, str] = field(default_factory=dict)  # day -> the run key last requested

    @classmethod
    def load(cls, text: str | None) -> Cursor:
        return cls(**json.loads(text)) if text else cls()

    def dump(self) -> str:
        return json.dumps({"seen": self.seen, "checked": self.checked, "requested": self.requested}, sort_keys=True)


@dataclass
class Tick:
    requests: list[dg.RunRequest] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)


def landing_zone_sensor(
    job: dg.UnresolvedAssetJobDefinition, specs: Sequence[TableSpec], *, name: str = "landing_zone_sensor",
    minimum_interval_seconds: int = 30, default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
) -> dg.SensorDefinition:
    """Runs `job` for each day whose landing files (one per source table of `specs`) have all arrived."""
    sources = landing_sources(specs)
    if not sources or len({id(s.partitions) for s in sources}) > 1:
        raise ValueError(f"{name}: needs source tables that share one daily partitions definition")

    @dg.sensor(name=name, job=job, minimum_interval_seconds=minimum_interval_seconds, default_status=default_status,
               required_resource_keys={"settings"},
               description=f"Runs {job.name} for each day whose files ({', '.join(s.source.name for s in sources)}) "
                           "have arrived in PROVLINE_LANDING_DIR.")
    def _sensor(context: dg.SensorEvaluationContext):
        settings = context.resources.settings
        if settings.landing_folder is None:
            return dg.SkipReason("PROVLINE_LANDING_DIR is not set: no landing zone to watch")
        cursor = Cursor.load(context.cursor)
        tick = scan(settings.landing_folder, sources, cursor, settings)
        for line in tick.rejected:
            context.log.warning(line)
        skip = None if tick.requests else "; ".join(tick.waiting + tick.rejected) or "no new landing files"
        return dg.SensorResult(run_requests=tick.requests, cursor=cursor.dump(), skip_reason=skip)

    return _sensor


def scan(landing: Path, sources: list[TableSpec], cursor: Cursor, settings: Settings) -> Tick:
    """One look at the landing zone: reject what cannot be loaded, request the days that are complete."""
    tick = Tick()
    partitions = sources[0].partitions
    ready: dict[str, dict[str, str]] = {}  # day -> {source: md5}
    seen: dict[str, list[int]] = {}
    for spec in sources:
        folder = landing / spec.source.name
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            if not path.is_file() or _ignored(path.name):
                continue
            key = f"{spec.source.name}/{path.name}"
            stat = path.stat()
            seen[key] = [stat.st_size, stat.st_mtime_ns]
            settled = time.time() - stat.st_mtime_ns / 1e9 >= settings.landing_settle_s
            if cursor.seen.get(key) != seen[key] or not settled:
                tick.waiting.append(f"{key} is still changing")
                continue
            day = DAY_FILE.match(path.name)
            if day and partitions.end is None and day.group(1) > (partitions.get_last_partition_key() or ""):
                tick.waiting.append(f"{key}: {day.group(1)} is not a partition yet")
                continue
            checked = cursor.checked.get(key)
            if checked is None or checked[:2] != seen[key]:
                problem = _problem(spec, path, partitions)
                if problem is not None:
                    tick.rejected.append(reject(landing, spec.source.name, path, problem, settings))
                    seen.pop(key)
                    continue
                checked = cursor.checked[key] = [*seen[key], read_file(path, spec.contract).content_hash]
            ready.setdefault(day.group(1), {})[spec.source.name] = checked[2]
    cursor.seen = seen
    cursor.checked = {key: value for key, value in cursor.checked.items() if key in seen}
    names = [spec.source.name for spec in sources]
    for day, files in sorted(ready.items()):
        if len(files) < len(names):
            tick.waiting.append(f"{day}: waiting for {', '.join(n for n in names if n not in files)}")
            continue
        versions = ",".join(f"{name}={files[name]}" for name in names)
        run_key = f"{day}:{hashlib.md5(versions.encode()).hexdigest()[:16]}"
        if cursor.requested.get(day) != run_key:
            cursor.requested[day] = run_key
            tick.requests.append(dg.RunRequest(run_key=run_key, partition_key=day, tags={RUN_TAG: versions}))
    return tick


def _problem(spec: TableSpec, path: Path, partitions: dg.DailyPartitionsDefinition) -> str | None:
    """Why a settled landing file cannot be loaded, or None."""
    match = DAY_FILE.match(path.name)
    if match is None:
        return f"not a daily landing file name: expected <YYYY-MM-DD>.csv or .parquet, got {path.name!r}"
    day = match.group(1)
    try:
        date.fromisoformat(day)
    except ValueError:
        return f"{day} is not a date"
    first, last = partitions.start.strftime("%Y-%m-%d"), partitions.get_last_partition_key()
    if day < first or (partitions.end is not None and day > last):
        span = f"{first}..{last}" if partitions.end is not None else f"from {first}"
        return f"{day} is outside the daily partitions of {spec.table} ({span})"
    others = [p for p in path.parent.glob(f"{day}.*") if p != path and p.suffix in DAY_FILE_SUFFIXES]
    if others and others[0].stat().st_mtime_ns <= path.stat().st_mtime_ns:
        return f"{others[0].name} already holds {day}: a second file for the same day is not loaded"
    try:
        read_day(path, spec.contract, spec.daily_on, day)
    except SourceError as error:
        return str(error)
    return None


def reject(landing: Path, source: str, path: Path, reason: str, settings: Settings) -> str:
    """Move a landing file to `<landing>/rejected/<source>/` (never over an earlier one) with `<name>.reason`,
    and alert. Returns the line that says so."""
    folder = landing / REJECTED / source
    folder.mkdir(parents=True, exist_ok=True)
    target, n = folder / path.name, 1
    while target.exists():
        target, n = folder / f"{path.stem}.{n}{path.suffix}", n + 1
    digest = hashlib.md5(path.read_bytes()).hexdigest()
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    target.with_name(target.name + ".reason").write_text(
        f"{reason}\n\nfile: {path}\nmd5: {digest}\nrejected at: {at}\n")
    os.replace(path, target)
    line = f"rejected {source}/{path.name}: {reason} (moved to {target})"
    match = DAY_FILE.match(path.name)
    alerts.notify([alerts.Event(alerts.LANDING_REJECTED, f"landing/{source}", match.group(1) if match else path.name,
                                "landing_file", True, reason, f"moved to {target}")], settings)
    return line


# --- seeding -------------------------------------------------------------------------------------


def seed(specs: Sequence[TableSpec], days: list[str], landing: Path) -> list[Path]:
    """Split each landing source's whole file into daily landing files for `days` (demos and tests). Each file
    keeps the source's format and text; it is written under a temporary name and renamed into place."""
    written = []
    for spec in landing_sources(specs):
        path = source_path(spec.source)
        labels = partition_keys(read_source(spec.source, spec.contract).frame, spec.daily_on)
        parquet = path.suffix == ".parquet"
        raw = pd.read_parquet(path) if parquet else pd.read_csv(path, dtype=str, keep_default_na=False)
        folder = landing / spec.source.name
        folder.mkdir(parents=True, exist_ok=True)
        for day in days:
            target = folder / f"{day}{'.parquet' if parquet else '.csv'}"
            temporary = folder / f".{target.name}.tmp"
            rows = raw[labels == day]
            rows.to_parquet(temporary, index=False) if parquet else rows.to_csv(temporary, index=False)
            os.replace(temporary, target)
            written.append(target)
    return written
