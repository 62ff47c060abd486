"""The Dagster run's own OpenLineage run (the parent of the asset runs): its job name, START and terminal event.

The executor of the code location (`with_run_lineage`) emits both, in the process that executes the run:
Dagster calls an executor once per run, wherever the run was started — `dagster asset materialize`,
the UI, a schedule or a sensor — and it sees every step end, or the run be interrupted. No daemon is needed
(a run-status sensor only fires under one). A run executed in process (`materialize()`, `provline run`) does
not use the code location's executor: its first step emits START and `provline run` calls `finish_run`.
The run-status sensors (sensors.py) stay as the fallback for a run whose process died: once
Dagster's run monitoring marks it failed, the sensor emits its FAIL. Whoever comes first emits; the others
find the marker (see LineageEmitter.run_finished).

An interrupt (Ctrl-C, kill -INT/-TERM, a terminate request) is the operator's cancel: `record_cancel`
marks the run CANCELING, so Dagster ends it CANCELED and lineage ABORT, not FAILURE "interrupted
unexpectedly". The other way round, a cancel through the instance interrupts the process that executes the
run (`interrupt_on_cancel`), so both end a run the same way. A process whose run the executor saw interrupted
exits INTERRUPTED (130, the shell's status for Ctrl-C), as `provline run` does: Dagster's CLI says only
"Materialization failed." and exits 1 (`exit_interrupted`).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from pipelines.dagster_internals import RUN_FAILURE_REASON_TAG, RetryMode, RunFailureReason
from pipelines.lineage import naming
from pipelines.lineage.emitter import LineageEmitter, RunTerminal
from pipelines.settings import Settings

MATERIALIZE = "materialize:"
SHOWN_PARTS = 3
CANCEL_POLL_S = 1.0
INTERRUPTED = 130
"""The exit status of a process ended by Ctrl-C (128 + SIGINT), as shells report it."""
_interrupted_here = threading.Event()

RUN_TERMINAL: dict[dg.DagsterRunStatus, RunTerminal] = {
    dg.DagsterRunStatus.SUCCESS: "COMPLETE",
    dg.DagsterRunStatus.FAILURE: "FAIL",
    dg.DagsterRunStatus.CANCELED: "ABORT",
}


def run_job_name(run: dg.DagsterRun, job: dg.JobDefinition | None) -> str:
    """The name a user knows a run by: its job's, or for Dagster's internal asset jobs (`__ASSET_JOB` of a
    CLI or UI materialization, `__ephemeral_asset_job__` of `materialize()`) what it materializes:
    `materialize:group:sales` for a whole group, else the assets (`materialize:raw.orders,raw.customers`)."""
    if not run.job_name.startswith("__") or job is None:  # Dagster's own jobs are the only ones named __...
        return run.job_name
    selected = set(run.asset_selection or ()) or set(job.asset_layer.selected_asset_keys)
    # a job's asset graph is cut to its selection: a group is whole in the graph it was cut from
    graph = job.asset_layer.asset_graph
    graph = getattr(graph, "source_asset_graph", graph)
    groups: dict[str, set[dg.AssetKey]] = {}
    for key in graph.materializable_asset_keys:
        groups.setdefault(graph.get(key).group_name, set()).add(key)
    parts, rest = [], set(selected)
    for group, keys in sorted(groups.items()):
        if keys <= rest:
            parts.append(f"group:{group}")
            rest -= keys
    parts += sorted(naming.table_name(key.to_user_string()) for key in rest)
    more = f"+{len(parts) - SHOWN_PARTS}" if len(parts) > SHOWN_PARTS else ""
    return MATERIALIZE + ",".join(parts[:SHOWN_PARTS]) + more


def ended_as(run: dg.DagsterRun) -> dg.DagsterRunStatus:
    """How the run ended; one interrupted before its cancel was recorded (between two steps) is CANCELED too
    (Dagster ends it FAILURE "interrupted unexpectedly")."""
    if run.tags.get(RUN_FAILURE_REASON_TAG) == RunFailureReason.UNEXPECTED_TERMINATION.value:
        return dg.DagsterRunStatus.CANCELED
    return run.status


def finish_run(run: dg.DagsterRun, error: str | None = None, job_name: str | None = None,
               settings: Settings | None = None) -> None:
    """The terminal event of a finished Dagster run (named as its START was)."""
    if (state := RUN_TERMINAL.get(ended_as(run))) is not None:
        LineageEmitter(settings).run_finished(run.run_id, job_name or run.job_name, state, error)


def record_cancel(instance: dg.DagsterInstance, run_id: str) -> None:
    """Record an interrupt of the run as a cancel request, unless one was made or Dagster will resume the run."""
    run = instance.get_run_by_id(run_id)
    if run is None or run.is_finished or run.status == dg.DagsterRunStatus.CANCELING \
            or instance.run_will_resume(run_id):
        return
    instance.report_run_canceling(run, message="Interrupted (Ctrl-C, a signal or a terminate request): canceling.")


def _canceling(instance: dg.DagsterInstance, run_id: str) -> bool:
    run = instance.get_run_by_id(run_id)
    return run is not None and run.status in (dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.CANCELED)


@contextmanager
def interrupt_on_cancel(instance: dg.DagsterInstance, run: dg.RunsFilter) -> Iterator[None]:
    """While inside, interrupt this process (SIGINT) when the run is canceled through the Dagster instance (the
    UI's Terminate, `report_run_canceling`): a run executed by the CLI or `provline run` then ends as on Ctrl-C,
    lock waits included; nothing else would tell it (only runs launched by a run launcher get a cancel request).
    Dagster's own cancellation thread would do, but it also interrupts a run that just ended FAILURE, and polls
    every 10 s."""
    if instance.is_ephemeral or threading.current_thread() is not threading.main_thread():
        yield  # nobody else can reach an in-memory instance; a signal would not reach this thread
        return
    stop = threading.Event()

    def watch() -> None:
        with dg.DagsterInstance.from_ref(instance.get_ref()) as own:  # an instance of its own, in its thread
            while not stop.wait(CANCEL_POLL_S):
                found = own.get_runs(run, limit=1)
                if found and found[0].status == dg.DagsterRunStatus.CANCELING:
                    os.kill(os.getpid(), signal.SIGINT)
                    return

    watcher = threading.Thread(target=watch, name="provline-cancel-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()


def exit_interrupted() -> None:
    """At exit, whatever status the process was exiting with (Dagster's CLI: 1), exit INTERRUPTED if this
    process executed a run that an interrupt ended. The lineage outbox and the alerts are flushed before it
    (threading's exit hooks run before atexit's), and so is every atexit handler registered after this module's
    import (atexit runs the latest first); logging is shut down and the streams flushed here, which os._exit
    would skip. (Python has no other way to change the status of an exit already under way.)"""
    if not _interrupted_here.is_set():
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: nothing more to say
            pass
    os._exit(INTERRUPTED)


atexit.register(exit_interrupted)


class LineageExecutor(dg.Executor):
    """Runs the steps with another executor; emits the run's START before them and its terminal event after:
    COMPLETE, FAIL (a step failed: Dagster ends the run FAILURE) or ABORT (interrupted or canceled: CANCELED)."""

    def __init__(self, inner: dg.Executor):
        self._inner = inner

    @property
    def retries(self) -> RetryMode:
        return self._inner.retries

    @property
    def step_dependency_config(self):
        return self._inner.step_dependency_config

    def execute(self, plan_context, execution_plan) -> Iterator[dg.DagsterEvent]:
        run, instance = plan_context.dagster_run, plan_context.instance
        name = run_job_name(run, plan_context.job.get_definition())
        emitter = LineageEmitter()
        emitter.run_started(run.run_id, name)
        failed: list[str] = []
        try:
            with interrupt_on_cancel(instance, dg.RunsFilter(run_ids=[run.run_id])):
                for event in self._inner.execute(plan_context, execution_plan):
                    if event.is_step_failure:
                        failed.append(event.step_key)
                    yield event
        except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError):
            record_cancel(instance, run.run_id)
            emitter.run_finished(run.run_id, name, "ABORT", "interrupted")
            _interrupted_here.set()
            raise
        except GeneratorExit:
            raise
        except BaseException as error:
            emitter.run_finished(run.run_id, name, "ABORT" if _canceling(instance, run.run_id) else "FAIL", str(error))
            raise
        state = "ABORT" if _canceling(instance, run.run_id) else "FAIL" if failed else "COMPLETE"
        emitter.run_finished(run.run_id, name, state, f"steps failed: {failed}" if failed else None)


def with_run_lineage(executor: dg.ExecutorDefinition) -> dg.ExecutorDefinition:
    """`executor` (same name and config), emitting each run's own OpenLineage events (LineageExecutor)."""

    @dg.executor(name=executor.name, config_schema=executor.config_schema, requirements=executor.get_requirements)
    def run_lineage_executor(init_context) -> LineageExecutor:
        return LineageExecutor(executor.executor_creation_fn(init_context))

    return run_lineage_executor
