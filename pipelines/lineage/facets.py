"""OpenLineage facets built from the factory's plain model, with openlineage-python's classes."""

from __future__ import annotations

import functools
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import attr
from openlineage.client.constants import __version__ as OPENLINEAGE_CLIENT_VERSION
from openlineage.client.facet_v2 import (
    DatasetFacet,
    JobFacet,
    RunFacet,
    column_lineage_dataset,
    data_quality_assertions_dataset,
    data_quality_metrics_dataset,
    dataset_version_dataset,
    documentation_job,
    error_message_run,
    job_type_job,
    nominal_time_run,
    output_statistics_output_dataset,
    ownership_job,
    parent_run,
    processing_engine_run,
    schema_dataset,
    source_code_location_job,
    sql_job,
    tags_job,
    tags_run,
)

from pipelines.lineage.model import AssetRun, ColumnSource, OutputInfo, Transformation
from pipelines.lineage.naming import file_dataset, table_name


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


PROVLINE_VERSION = _version("provline") or "0.1.0"
PRODUCER = f"https://github.com/provline/provline/tree/{PROVLINE_VERSION}"
# An installed provline names itself as the adapter; a bare checkout falls back to the client.
ADAPTER_VERSION = _version("provline") or OPENLINEAGE_CLIENT_VERSION
REPO_ROOT = Path(__file__).resolve().parents[2]


def utc_iso(ts: datetime) -> str:
    """ISO 8601 with an offset; a naive datetime is taken as UTC."""
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).isoformat()


def strip_credentials(url: str) -> str:
    """Drop the user-info part of a remote URL (``https://user:token@host/x`` -> ``https://host/x``).

    scp-like remotes (``git@github.com:org/repo.git``) carry no secret and are kept as they are.
    """
    parts = urlsplit(url)
    if not parts.scheme or "@" not in parts.netloc:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=2, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@functools.cache
def git_location() -> tuple[str, str | None] | None:
    """(remote url without credentials, HEAD sha) of the checkout, once per process; None outside git."""
    url = _git("config", "--get", "remote.origin.url")
    if not url:
        return None
    return strip_credentials(url), _git("rev-parse", "HEAD")


@functools.cache
def dagster_version() -> str:
    return _version("dagster") or "unknown"


# ---- run facets -----------------------------------------------------------------------------


def parent(namespace: str, job: str, run_id: str) -> parent_run.ParentRunFacet:
    """The Dagster run is both the parent and the root of every asset run."""
    return parent_run.ParentRunFacet(
        run=parent_run.Run(runId=run_id),
        job=parent_run.Job(namespace=namespace, name=job),
        root=parent_run.Root(
            run=parent_run.RootRun(runId=run_id),
            job=parent_run.RootJob(namespace=namespace, name=job),
        ),
        producer=PRODUCER,
    )


def processing_engine() -> processing_engine_run.ProcessingEngineRunFacet:
    return processing_engine_run.ProcessingEngineRunFacet(
        version=dagster_version(),
        name="Dagster",
        openlineageAdapterVersion=ADAPTER_VERSION,
        producer=PRODUCER,
    )


def nominal_time(run: AssetRun) -> nominal_time_run.NominalTimeRunFacet | None:
    if run.nominal_start is None:
        return None
    return nominal_time_run.NominalTimeRunFacet(
        nominalStartTime=utc_iso(run.nominal_start),
        nominalEndTime=utc_iso(run.nominal_end) if run.nominal_end else None,
        producer=PRODUCER,
    )


def error_message(message: str, stack_trace: str | None) -> error_message_run.ErrorMessageRunFacet:
    return error_message_run.ErrorMessageRunFacet(
        message=message, programmingLanguage="python", stackTrace=stack_trace, producer=PRODUCER
    )


def asset_run_facets(run: AssetRun, namespace: str, parent_run_id: str) -> dict[str, RunFacet]:
    facets: dict[str, RunFacet] = {
        "parent": parent(namespace, run.dagster_job_name, parent_run_id),
        "processing_engine": processing_engine(),
    }
    if nominal := nominal_time(run):
        facets["nominalTime"] = nominal
    facets["tags"] = run_tags(run)
    return facets


def run_tags(run: AssetRun) -> tags_run.TagsRunFacet:
    """What ties the OpenLineage run back to Dagster and to the code that ran."""
    values = {
        "dagster_run_id": run.dagster_run_id,
        "partition": run.partition,
        "attempt": str(run.attempt),
        "code_version": run.code_version,
    }
    return tags_run.TagsRunFacet(
        tags=[
            tags_run.TagsRunFacetFields(key=k, value=v, source="DAGSTER") for k, v in values.items() if v is not None
        ],
        producer=PRODUCER,
    )


# ---- job facets -----------------------------------------------------------------------------


def job_type(kind: str) -> job_type_job.JobTypeJobFacet:
    return job_type_job.JobTypeJobFacet(processingType="BATCH", integration="DAGSTER", jobType=kind, producer=PRODUCER)


def source_code_location(path: str | None) -> source_code_location_job.SourceCodeLocationJobFacet | None:
    location = git_location()
    if location is None:
        return None
    url, sha = location
    return source_code_location_job.SourceCodeLocationJobFacet(
        type="git", url=url, repoUrl=url, path=path, version=sha, producer=PRODUCER
    )


def asset_job_facets(run: AssetRun) -> dict[str, JobFacet]:
    facets: dict[str, JobFacet] = {"jobType": job_type("ASSET")}
    if run.sql:
        facets["sql"] = sql_job.SQLJobFacet(query=run.sql, dialect="duckdb", producer=PRODUCER)
    if scl := source_code_location(run.source_path):
        facets["sourceCodeLocation"] = scl
    if run.description:
        facets["documentation"] = documentation_job.DocumentationJobFacet(
            description=run.description, producer=PRODUCER
        )
    if run.owners:
        facets["ownership"] = ownership_job.OwnershipJobFacet(
            owners=[ownership_job.Owner(name=owner) for owner in run.owners], producer=PRODUCER
        )
    if run.tags:
        facets["tags"] = tags_job.TagsJobFacet(
            tags=[tags_job.TagsJobFacetFields(key=k, value=v, source="DAGSTER") for k, v in run.tags.items()],
            producer=PRODUCER,
        )
    return facets


# ---- dataset facets -------------------------------------------------------------------------


@attr.define
class DataContractDatasetFacet(DatasetFacet):
    """provline's custom facet: the data contract a dataset version was checked against. The schema facet has
    no place for a contract's version; `provline contract export <table>` writes the contract (ODCS v3.1.0)."""

    name: str
    version: str
    standard: str = "ODCS v3.1.0"

    @staticmethod
    def _get_schema() -> str:
        return f"{PRODUCER}/pipelines/lineage/facets.py#DataContractDatasetFacet"


def dataset_version(version: str) -> dataset_version_dataset.DatasetVersionDatasetFacet:
    return dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=version, producer=PRODUCER)


def assertions(output: OutputInfo) -> data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet:
    # The 1-1-0 spec facet has name/severity/expected/actual: no custom facet needed.
    return data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet(
        assertions=[
            data_quality_assertions_dataset.Assertion(
                assertion=a.name,
                success=a.success,
                column=a.column,
                severity=a.severity,
                name=a.name,
                expected=a.expected,
                actual=a.actual,
            )
            for a in output.assertions
        ],
        producer=PRODUCER,
    )


def dataset_id(name: str, warehouse_ns: str) -> tuple[str, str]:
    """A column-lineage source: a warehouse table, or a source file when it is a path."""
    return file_dataset(name) if name.startswith("/") else (warehouse_ns, table_name(name))


def _input_fields(
    sources: list[tuple[str, str, Transformation | None]], namespace: str
) -> list[column_lineage_dataset.InputField]:
    """One InputField per input column, its transformations merged in first-seen order."""
    merged: dict[tuple[str, str], list[Transformation]] = {}
    for dataset, col, transformation in sources:
        found = merged.setdefault((dataset, col), [])
        if transformation is not None and transformation not in found:
            found.append(transformation)
    return [
        column_lineage_dataset.InputField(
            namespace=ns,
            name=name,
            field=col,
            transformations=[
                column_lineage_dataset.Transformation(type=t.type, subtype=t.subtype, description=t.description)
                for t in transformations
            ],
        )
        for (dataset, col), transformations in merged.items()
        for ns, name in [dataset_id(dataset, namespace)]
    ]


def column_lineage(output: OutputInfo, namespace: str) -> column_lineage_dataset.ColumnLineageDatasetFacet | None:
    """fields: per output column, its DIRECT and field-level INDIRECT inputs; dataset: the INDIRECT
    inputs of the whole output (join keys, filters, grouping, sort). Plain (dataset, column) pairs
    carry no transformation."""
    fields = {
        column: column_lineage_dataset.Fields(
            inputFields=_input_fields([ColumnSource(*source) for source in sources], namespace)
        )
        for column, sources in output.column_lineage.items()
        if sources
    }
    indirect = [
        (dataset, col, Transformation("INDIRECT", subtype)) for dataset, col, subtype in output.indirect_lineage
    ]
    if not fields and not indirect:
        return None
    return column_lineage_dataset.ColumnLineageDatasetFacet(
        fields=fields, dataset=_input_fields(indirect, namespace), producer=PRODUCER
    )


def output_dataset_facets(output: OutputInfo, namespace: str, committed: bool) -> dict:
    """Dataset facets of the written table; an uncommitted (failed) output carries only its checks."""
    facets: dict = {
        "schema": schema_dataset.SchemaDatasetFacet(
            fields=[
                schema_dataset.SchemaDatasetFacetFields(
                    name=c.name, type=c.type, description=c.description, ordinal_position=i
                )
                for i, c in enumerate(output.columns, 1)
            ],
            producer=PRODUCER,
        )
    }
    if output.contract_version:
        facets["dataContract"] = DataContractDatasetFacet(name=output.name, version=output.contract_version,
                                                          producer=PRODUCER)
    if output.assertions:
        facets["dataQualityAssertions"] = assertions(output)
    if not committed:
        return facets
    if output.version:
        facets["version"] = dataset_version(output.version)
    if lineage := column_lineage(output, namespace):
        facets["columnLineage"] = lineage
    facets["dataQualityMetrics"] = data_quality_metrics_dataset.DataQualityMetricsDatasetFacet(
        rowCount=output.row_count,
        columnMetrics={
            column: data_quality_metrics_dataset.ColumnMetrics(
                nullCount=m.null_count, distinctCount=m.distinct_count, sum=m.sum, count=m.count)
            for column, m in output.column_metrics.items()
        },
        producer=PRODUCER,
    )
    return facets


def output_statistics(output: OutputInfo) -> output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet:
    return output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
        rowCount=output.row_count, producer=PRODUCER
    )
