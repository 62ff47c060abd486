"""The one Definitions of the provline code location: `dagster dev` and the CLI load this.

Every package under assets/ that exports a `domain` (pipelines/domain.py) is collected: its tables become
assets through the factory, its jobs, schedules and sensors are added as they are. The runtime adds the
warehouse resource, the run-level lineage sensors and the executor.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import dagster as dg

import assets
from pipelines.domain import Domain, domains_in
from pipelines.factory import build_asset, resources
from pipelines.lineage.runs import with_run_lineage
from pipelines.lineage.sensors import lineage_sensors
from pipelines.monitor.sensors import monitor_sensors
from pipelines.spec import TableSpec
from pipelines.warehouse import Warehouse


def discover_domains() -> list[Domain]:
    """The `domain` of each package under assets/, in name order."""
    return domains_in(assets)


class Catalog:
    """Every table of the code location, by name: what `provline verify` and the audits look up."""

    def __init__(self, domains: Iterable[Domain]):
        self.specs: dict[str, TableSpec] = {}
        for domain in domains:
            for spec in domain.tables:
                if spec.table in self.specs:
                    raise ValueError(f"{spec.table} is defined twice (domain {domain.name})")
                self.specs[spec.table] = spec

    def __getitem__(self, table: str) -> TableSpec:
        return self.specs[table]

    def __iter__(self) -> Iterator[TableSpec]:
        return iter(self.specs.values())

    def get(self, table: str) -> TableSpec | None:
        return self.specs.get(table)


# A run's steps execute one after another in the run's process: a step is mostly DuckDB work that already
# uses every core, and a process per step costs more (imports, instance setup: 3.6 s vs 11.3 s for a run of
# three trivial assets here) than it saves. Runs still go in parallel with each other (see warehouse/). The
# executor also emits the run's own OpenLineage START and terminal event (pipelines/lineage/runs.py).
executor = with_run_lineage(dg.in_process_executor)


def build_definitions(domains: Sequence[Domain], warehouse: Warehouse | None = None) -> dg.Definitions:
    catalog = Catalog(domains)
    return dg.Definitions(
        assets=[build_asset(spec) for spec in catalog],
        jobs=[job for domain in domains for job in domain.jobs],
        schedules=[schedule for domain in domains for schedule in domain.schedules],
        sensors=[*lineage_sensors, *monitor_sensors(list(catalog)),
                 *(sensor for domain in domains for sensor in domain.sensors)],
        resources=resources(warehouse),
        executor=executor,
    )


domains = discover_domains()
catalog = Catalog(domains)
defs = build_definitions(domains)
