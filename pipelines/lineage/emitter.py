"""LineageEmitter: what the asset factory calls to emit OpenLineage events.

Every public method returns None and never raises: a lineage problem is logged as a warning and
the pipeline moves on. Events go through openlineage-python's client (so its config applies:
filters, tags, environment-variable facets) and then to delivery (transports + durable outbox).
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from openlineage.client.event_v2 import (
    InputDataset,
    Job,
    OutputDataset,
    Run,
    RunEvent,
    RunState,
)
from openlineage.client.facet_v2 import tags_run

from pipelines.lineage import facets, naming
from pipelines.lineage.delivery import Delivery, ReplayResult, load_client_config, redact, replay
from pipelines.lineage.model import AssetRun, DatasetRef, OutputInfo, SourceFile
from pipelines.settings import Settings, get_settings
from pipelines.sql import interrupted

log = logging.getLogger(__name__)

RunTerminal = Literal["COMPLETE", "FAIL", "ABORT"]

__all__ = ["LineageEmitter", "ReplayResult", "main_replay", "replay"]


class LineageEmitter:
    def __init__(self, settings: Settings | None = None, dataset_namespace: str | None = None) -> None:
        """`dataset_namespace`: the warehouse's (Warehouse.lineage_namespace); by default the DuckDB file's."""
        self.settings = settings or get_settings()
        self.namespace = self.settings.lineage_namespace
        self.dataset_namespace = dataset_namespace or naming.warehouse_namespace(self.settings.warehouse_name)
        self._lock = threading.Lock()
        self._delivery: Delivery | None = None
        self._scrub: set[str] = set()
        try:
            self.settings.lineage_dir.mkdir(parents=True, exist_ok=True)
            self._client, self._capture, config = load_client_config(self.settings)
            self._delivery = Delivery(self.settings, config)
            self._scrub = self._delivery.scrub
        except Exception as exc:  # noqa: BLE001 - lineage must never stop the pipeline
            log.warning("OpenLineage emitter disabled: %s", redact(exc, self._scrub))

    # ---- the Dagster run (parent of the asset runs) ----------------------------------------

    def run_started(self, dagster_run_id: str, dagster_job_name: str) -> None:
        """START of the Dagster run; the executor and every step call it, the first one emits it."""
        self._guard(self._run_event, dagster_run_id, dagster_job_name, "START", None)

    def run_finished(
        self,
        dagster_run_id: str,
        dagster_job_name: str,
        state: RunTerminal,
        error: str | None = None,
    ) -> None:
        """The Dagster run's terminal event, once (the first caller emits it), under the job name its START
        gave it when there was one (`dagster_job_name` otherwise)."""
        self._guard(self._run_event, dagster_run_id, dagster_job_name, state, error)

    def missed_terminal(self, run_id: str, job_namespace: str, job_name: str, dagster_run_id: str,
                        state: RunTerminal, error: str) -> None:
        """The terminal event an OpenLineage run never got (its process died), emitted late and once, as
        its Dagster run ended."""
        self._guard(self._missed_terminal, run_id, job_namespace, job_name, dagster_run_id, state, error)

    # ---- one (asset, partition, attempt) ---------------------------------------------------

    def asset_started(self, run: AssetRun, inputs: list[DatasetRef | SourceFile]) -> None:
        self._guard(self._asset_event, run, "START", inputs, None, None, None)

    def asset_completed(self, run: AssetRun, inputs: list[DatasetRef | SourceFile], output: OutputInfo) -> None:
        self._guard(self._asset_event, run, "COMPLETE", inputs, output, None, None)

    def asset_failed(
        self,
        run: AssetRun,
        inputs: list[DatasetRef | SourceFile],
        error: str,
        output: OutputInfo | None = None,
        stack_trace: str | None = None,
    ) -> None:
        """FAIL; ``output`` (not committed) carries the failed checks in dataQualityAssertions."""
        self._guard(self._asset_event, run, "FAIL", inputs, output, error, stack_trace)

    def asset_aborted(self, run: AssetRun, inputs: list[DatasetRef | SourceFile]) -> None:
        self._guard(self._asset_event, run, "ABORT", inputs, None, None, None)

    def close(self) -> None:
        """Wait at most PROVLINE_LINEAGE_EXIT_WAIT_S for queued events to be sent, then release the transports.

        Optional: at process exit the same wait happens anyway. It stops this process's background
        delivery to these queues until the next emission."""
        if self._delivery is not None:
            self._delivery.close()

    # ---- internals -------------------------------------------------------------------------

    def _guard(self, fn: Any, *args: Any) -> None:
        if self._delivery is None:
            return
        try:
            with self._lock:
                fn(*args)
        except Exception as exc:  # noqa: BLE001 - lineage must never stop the pipeline
            if interrupted(exc):  # (DuckDB's form of Ctrl-C: the step must end, not carry on)
                raise
            log.warning("OpenLineage emission skipped: %s", redact(exc, self._scrub))

    def _emit(self, event: RunEvent) -> None:
        assert self._delivery is not None
        self._client.emit(event)  # applies the client's config; filtered events never arrive
        while self._capture.events:
            self._delivery.send(self._capture.events.pop(0))

    def _marker(self, run_id: str, what: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in run_id)
        return self.settings.lineage_dir / "runs" / f"{safe}.{what}"

    def _once(self, run_id: str, what: str, note: str = "") -> bool:
        """True for the first caller across processes (O_EXCL marker under PROVLINE_HOME/lineage/runs,
        holding `note`)."""
        marker = self._marker(run_id, what)
        marker.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            handle.write(note)
        return True

    def _run_event(self, dagster_run_id: str, job_name: str, state: str, error: str | None) -> None:
        if not self._once(dagster_run_id, "started" if state == "START" else "finished", job_name):
            return
        started = self._marker(dagster_run_id, "started")
        if state != "START" and started.exists():  # the terminal event goes under the name the START used
            job_name = started.read_text() or job_name
        run_facets: dict[str, Any] = {"processing_engine": facets.processing_engine(),
                                      "tags": _dagster_tags(dagster_run_id)}
        if error:
            run_facets["errorMessage"] = facets.error_message(error, None)
        self._emit(
            RunEvent(
                eventType=RunState[state],
                eventTime=_now(),
                run=Run(runId=naming.dagster_run_id(dagster_run_id), facets=run_facets),
                job=Job(namespace=self.namespace, name=job_name, facets={"jobType": facets.job_type("JOB")}),
                producer=facets.PRODUCER,
            )
        )

    def _missed_terminal(self, run_id: str, job_namespace: str, job_name: str, dagster_run_id: str,
                         state: str, error: str) -> None:
        if not self._once(run_id, "finished"):
            return
        self._emit(
            RunEvent(
                eventType=RunState[state],
                eventTime=_now(),
                run=Run(runId=run_id, facets={"errorMessage": facets.error_message(error, None),
                                              "tags": _dagster_tags(dagster_run_id)}),
                job=Job(namespace=job_namespace, name=job_name),
                producer=facets.PRODUCER,
            )
        )

    def _asset_event(
        self,
        run: AssetRun,
        state: str,
        inputs: list[DatasetRef | SourceFile],
        output: OutputInfo | None,
        error: str | None,
        stack_trace: str | None,
    ) -> None:
        run_id = naming.asset_run_id(run.dagster_run_id, run.asset_key, run.partition, run.attempt)
        run_facets: dict[str, Any] = facets.asset_run_facets(
            run, self.namespace, naming.dagster_run_id(run.dagster_run_id)
        )
        if error is not None:
            run_facets["errorMessage"] = facets.error_message(error, stack_trace)
        self._emit(
            RunEvent(
                eventType=RunState[state],
                eventTime=_now(),
                run=Run(runId=run_id, facets=run_facets),
                job=Job(
                    namespace=self.namespace, name=naming.job_name(run.asset_key), facets=facets.asset_job_facets(run)
                ),
                inputs=[self._input(ref) for ref in inputs],
                outputs=[self._output(run, output, committed=state == "COMPLETE")],
                producer=facets.PRODUCER,
            )
        )

    def _input(self, ref: DatasetRef | SourceFile) -> InputDataset:
        if isinstance(ref, SourceFile):
            namespace, name = naming.file_dataset(ref.path)
            return InputDataset(namespace=namespace, name=name, facets=_version_facet(ref.version))
        return InputDataset(namespace=self.dataset_namespace, name=naming.table_name(ref.name),
                            facets=_version_facet(ref.version))

    def _output(self, run: AssetRun, output: OutputInfo | None, committed: bool) -> OutputDataset:
        if output is None:
            return OutputDataset(namespace=self.dataset_namespace, name=naming.table_name(run.asset_key))
        return OutputDataset(
            namespace=self.dataset_namespace,
            name=naming.table_name(output.name),
            facets=facets.output_dataset_facets(output, self.dataset_namespace, committed),
            outputFacets={"outputStatistics": facets.output_statistics(output)} if committed else {},
        )


def _dagster_tags(dagster_run_id: str) -> tags_run.TagsRunFacet:
    """Ties an event of the Dagster run's own OpenLineage run back to it (asset runs carry more tags)."""
    return tags_run.TagsRunFacet(
        tags=[tags_run.TagsRunFacetFields(key="dagster_run_id", value=dagster_run_id, source="DAGSTER")],
        producer=facets.PRODUCER,
    )


def _version_facet(version: str | None) -> dict:
    return {"version": facets.dataset_version(version)} if version else {}


def _now() -> str:
    return datetime.now(UTC).isoformat()


def main_replay() -> int:
    """For `provline lineage replay`: print what was resent; exit 1 while events remain queued."""
    result = replay(get_settings())
    print(f"lineage replay: {result.sent} sent, {result.failed} failed, {result.remaining} remaining")
    return 1 if result.remaining else 0
