"""Getting events to the configured transports without ever failing, stalling or losing one.

The transports are openlineage-python's own, configured the standard way (openlineage.yml,
OPENLINEAGE__TRANSPORT__* / OPENLINEAGE_URL, via the client's config loader). Default when nothing is
configured: the file transport appending JSONL to PROVLINE_HOME/lineage/events.jsonl.

Emission never waits on the network
- A local transport (file, console, noop) is called directly; what it refuses goes to the outbox.
- Every other transport (http, kafka, composite...) gets its events through the outbox: the emitting
  thread writes the event durably and returns, and a background thread of the same process sends it.
  A slow, refusing or hanging backend therefore costs a step one outbox write per event, and an
  emitted event survives a crash of the step.
- CompositeTransport.emit raises only when *every* child failed (continue_on_failure=True), so one
  refusing child would silently lose the event. We emit to each child ourselves and give each its own
  outbox queue: an event is delivered to a child exactly when that child took it. (With
  continue_on_success=False, a failover composite, the composite is one target, as the library means.)

Outbox: PROVLINE_HOME/outbox/<target>/<wall-clock ns>-<pid>-<uuid>.json, one event per file, written
temp + fsync + rename + dir fsync. File names sort in emission order (per process, strictly
increasing). The outbox stores the event only, never transport config, so no credential is on disk.

Draining (hand-written: the outbox, the passes, the per-run order and the pauses between passes).
One drainer at a time per queue, across all processes (flock). A pass reads the queue in order, groups
it by runId and sends the runs on up to LANES threads; a run's events go one after the other and the
run stops at its first undelivered event (retried by the next pass), while the other runs carry on.
A lane gives up the pass after LANE_GIVE_UP refusals in a row (the backend is down). After a pass that
delivered nothing the drainer pauses, jittered and doubling from PAUSE_MIN_S to PAUSE_MAX_S, and stops
after MAX_IDLE_PASSES such passes (the next emission starts it again).
- In the background: one daemon thread per (process, queue), started by an emission, running while
  the queue has events. One attempt per event and pass (HttpTransport's retries off; its timeout is
  PROVLINE_LINEAGE_TIMEOUT_S): the next pass is the retry. At exit the process waits at most
  PROVLINE_LINEAGE_EXIT_WAIT_S for the queue, then leaves the rest to the next drainer or to replay.
- `provline lineage replay`: the same passes within PROVLINE_LINEAGE_REPLAY_BUDGET_S, and inside
  each send urllib3's Retry (the HttpTransport's own retry config, REPLAY_RETRY) retries timeouts,
  refused connections and 429/5xx in place with jittered exponential backoff.

Order: for each OpenLineage run (runId) the backend has accepted an event before the run's next one is
sent, so it receives START before COMPLETE/FAIL/ABORT. There is no order across runs (a Dagster run's
own events may arrive after its asset runs').

Duplicates: a request that timed out may still have been accepted by the backend; so may one cut off
by a process exit or a crash between "accepted" and "file deleted". Such an event stays in the outbox
and is sent again with identical bytes (Serde.to_json sorts keys; the outbox keeps the JSON). Delivery
is at least once: receivers dedupe on (runId, eventType, eventTime), as provline's own store does.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import Any

from openlineage.client import OpenLineageClient
from openlineage.client.serde import Serde
from openlineage.client.transport import get_default_factory
from openlineage.client.transport.composite import CompositeTransport
from openlineage.client.transport.transport import Config, Transport

from pipelines.background import Worker, at_exit
from pipelines.locks import try_lock
from pipelines.settings import Settings, openlineage_environment

log = logging.getLogger(__name__)

DEFAULT_QUEUE = "default"
LOCAL_KINDS = ("console", "file", "noop")  # cannot hang: called directly by the emitting thread
LANES = 4  # runs sent at once per pass: a hanging request holds one lane, not the queue
LANE_GIVE_UP = 3
PAUSE_MIN_S = 0.5
PAUSE_MAX_S = 30.0
MAX_IDLE_PASSES = 6
# Background drain: one attempt per event and pass; the next pass is the retry.
NO_RETRY: dict[str, Any] = {
    "total": 0,
    "connect": 0,
    "read": 0,
    "status": 0,
    "backoff_factor": 0,
    "status_forcelist": [],
    "allowed_methods": ["POST"],
}
# Replay: urllib3 retries each send in place, 3 attempts, pauses of 0 then 0.5-0.75 s (jittered).
REPLAY_RETRY: dict[str, Any] = {
    "total": 2,
    "connect": 2,
    "read": 2,
    "status": 2,
    "backoff_factor": 0.25,
    "backoff_jitter": 0.25,
    "backoff_max": 2.0,
    "status_forcelist": [429, 500, 502, 503, 504],
    "allowed_methods": ["POST"],
}
_SECRET_KEY = re.compile(r"key|secret|token|password|credential", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


@dataclass(frozen=True)
class ReplayResult:
    sent: int
    failed: int
    """Sends that failed (after urllib3's retries); an event retried by several passes counts each time."""
    remaining: int


@dataclass
class Target:
    """One place events must reach: a transport and its outbox queue."""

    name: str
    transport: Transport | None
    queue: Path

    @property
    def direct(self) -> bool:
        return self.transport is not None and self.transport.kind in LOCAL_KINDS


@dataclass
class Deadline:
    """A time.monotonic() instant, changeable while threads watch it (a drainer's is set at exit)."""

    at: float = math.inf

    def left(self) -> float:
        return self.at - time.monotonic()


class _Capture(Transport):
    """Receives the event after the client applied its config (filters, tags, env facets)."""

    kind = "provline-capture"
    config_class = Config

    def __init__(self) -> None:
        self.events: list[Any] = []

    def emit(self, event: Any) -> None:
        self.events.append(event)


# ---- configuration --------------------------------------------------------------------------


def _default_transport(settings: Settings) -> dict[str, Any]:
    return {
        "type": "file",
        "log_file_path": str(settings.lineage_dir / "events.jsonl"),
        "append": True,
    }


def transport_config(
    settings: Settings, loaded: dict[str, Any] | None, retry: dict[str, Any] = NO_RETRY
) -> dict[str, Any]:
    """The transport config the client loaded, or our file default, bounded in time, with our HTTP retry."""
    env = openlineage_environment()
    config = copy.deepcopy(loaded or {})
    if not config.get("type"):
        if env.get("OPENLINEAGE_URL"):
            # The client's legacy OPENLINEAGE_URL path (its `_http_transport_from_env_variables`).
            config = {"type": "http", "url": env["OPENLINEAGE_URL"]}
            if env.get("OPENLINEAGE_ENDPOINT"):
                config["endpoint"] = env["OPENLINEAGE_ENDPOINT"]
            if env.get("OPENLINEAGE_API_KEY"):
                config["auth"] = {"type": "api_key", "apiKey": env["OPENLINEAGE_API_KEY"]}
        else:
            config = _default_transport(settings)
    return _bounded(config, settings.lineage_timeout_s, retry)


def _bounded(config: dict[str, Any], timeout_s: float, retry: dict[str, Any]) -> dict[str, Any]:
    kind = str(config.get("type", "")).lower()
    if kind in ("http", "async_http"):
        config["timeout"] = min(float(config.get("timeout", timeout_s)), timeout_s)
        if kind == "http":
            config["retry"] = dict(retry)
    elif kind == "composite":
        children = config.get("transports") or {}
        items = children.values() if isinstance(children, dict) else children
        for child in items:
            if isinstance(child, dict):
                _bounded(child, timeout_s, retry)
    return config


def secrets_of(config: Any) -> set[str]:
    """Every string under a key that smells like a credential, to scrub from log lines."""
    found: set[str] = set()
    if isinstance(config, dict):
        for key, value in config.items():
            if isinstance(value, str) and _SECRET_KEY.search(str(key)) and len(value) >= 4:
                found.add(value)
            else:
                found |= secrets_of(value)
    elif isinstance(config, list):
        for value in config:
            found |= secrets_of(value)
    return found


def _queue_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or DEFAULT_QUEUE


def build_targets(config: dict[str, Any], outbox: Path) -> list[Target]:
    """One target per transport that must take every event; a broken config still queues events."""
    try:
        transport = get_default_factory().create(copy.deepcopy(config))
    except Exception as exc:  # noqa: BLE001 - a bad config must not fail a run: queue until fixed
        log.warning("OpenLineage transport config is invalid (%s); events go to the outbox", type(exc).__name__)
        return [Target(DEFAULT_QUEUE, None, outbox / DEFAULT_QUEUE)]
    if isinstance(transport, CompositeTransport) and transport.config.continue_on_success:
        return [
            Target(name, child, outbox / name)
            for i, child in enumerate(transport.transports)
            for name in [_queue_name(child.name or f"{i}-{child.kind}")]
        ]
    return [Target(DEFAULT_QUEUE, transport, outbox / DEFAULT_QUEUE)]


def load_client_config(
    settings: Settings, retry: dict[str, Any] = NO_RETRY
) -> tuple[OpenLineageClient, _Capture, dict[str, Any]]:
    """A client that only applies its config to events, and the transport config it loaded."""
    capture = _Capture()
    client = OpenLineageClient(transport=capture)
    return client, capture, transport_config(settings, client.config.transport, retry)


# ---- outbox ---------------------------------------------------------------------------------

_stamp_lock = threading.Lock()
_last_stamp = 0


def _next_stamp() -> int:
    global _last_stamp
    with _stamp_lock:
        _last_stamp = max(time.time_ns(), _last_stamp + 1)
        return _last_stamp


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def enqueue(queue: Path, payload: str) -> Path:
    """Write one event to the queue durably; the name sorts in emission order."""
    queue.mkdir(parents=True, exist_ok=True)
    name = f"{_next_stamp():020d}-{os.getpid():07d}-{uuid.uuid4().hex}.json"
    tmp = queue / f".tmp-{name}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, queue / name)
    _fsync_dir(queue)
    return queue / name


def pending(queue: Path) -> list[Path]:
    try:
        return sorted(p for p in queue.iterdir() if p.suffix == ".json" and not p.name.startswith("."))
    except FileNotFoundError:
        return []


def has_pending(queue: Path) -> bool:
    """Cheaper than ``pending`` on a long queue: stops at the first event file."""
    try:
        with os.scandir(queue) as entries:
            return any(e.name.endswith(".json") and not e.name.startswith(".") for e in entries)
    except FileNotFoundError:
        return False


def queue_lock(queue: Path) -> AbstractContextManager[bool]:
    """One drainer at a time per queue, across processes: yields whether we hold the queue's lock."""
    return try_lock(queue / ".lock")


def redact(exc: BaseException, scrub: set[str]) -> str:
    text = f"{type(exc).__name__}: {exc}"
    text = _URL_USERINFO.sub("", text)
    for secret in scrub:
        text = text.replace(secret, "***")
    return text[:500]


# ---- draining -------------------------------------------------------------------------------


def _run_id(path: Path) -> str:
    """The event's runId; an unreadable file is a run of its own (and fails its send)."""
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["run"]["runId"])
    except (OSError, ValueError, KeyError, TypeError):
        return path.name


def _runs(paths: list[Path]) -> list[list[Path]]:
    """The queue split by run, each run's events in emission order, runs by their first event."""
    runs: dict[str, list[Path]] = {}
    for path in paths:
        runs.setdefault(_run_id(path), []).append(path)
    return list(runs.values())


def _send(target: Target, path: Path, scrub: set[str]) -> str | None:
    """Send one queued event and delete it; the error text when it was not delivered."""
    assert target.transport is not None
    try:
        target.transport.emit(json.loads(path.read_text(encoding="utf-8")))
    except Exception as exc:  # noqa: BLE001 - any transport or file error means "not delivered"
        return redact(exc, scrub)
    path.unlink()
    return None


def _lane(target: Target, runs: SimpleQueue, deadline: Deadline, scrub: set[str]) -> tuple[int, int, str]:
    """Send whole runs from the shared work queue until it is empty; returns (sent, failed, last error)."""
    sent = failed = in_a_row = 0
    error = ""
    while in_a_row < LANE_GIVE_UP:
        try:
            run: list[Path] = runs.get_nowait()
        except Empty:
            break
        for path in run:
            if deadline.left() <= 0:
                return sent, failed, error
            problem = _send(target, path, scrub)
            if problem is not None:  # the rest of this run waits for the next pass
                failed, in_a_row, error = failed + 1, in_a_row + 1, problem
                break
            sent, in_a_row = sent + 1, 0
    return sent, failed, error


def drain_pass(target: Target, deadline: Deadline, scrub: set[str]) -> tuple[int, int]:
    """One pass over the queue, its runs on up to LANES daemon threads. Caller holds the lock."""
    work: SimpleQueue = SimpleQueue()
    runs = _runs(pending(target.queue))
    for run in runs:
        work.put(run)
    results: list[tuple[int, int, str]] = []
    lanes = [
        threading.Thread(target=lambda: results.append(_lane(target, work, deadline, scrub)), daemon=True)
        for _ in range(min(LANES, len(runs)))
    ]
    for lane in lanes:
        lane.start()
    for lane in lanes:
        lane.join()
    sent, failed = sum(r[0] for r in results), sum(r[1] for r in results)
    if failed:
        error = next(r[2] for r in results if r[2])
        # A partly refused pass is routine on a flaky backend; a pass that delivered nothing is not.
        level = logging.INFO if sent else logging.WARNING
        log.log(level, "OpenLineage %s refused %d queued event(s), kept in the outbox: %s", target.name, failed, error)
    return sent, failed


def _pause(idle_passes: int) -> float:
    """Jittered exponential pause after the n-th pass in a row that delivered nothing."""
    return min(PAUSE_MAX_S, PAUSE_MIN_S * 2 ** (idle_passes - 1)) * random.uniform(0.5, 1.0)


def drain(target: Target, deadline: Deadline, exiting: threading.Event, scrub: set[str]) -> tuple[int, int]:
    """Passes until the queue is empty, the deadline, or MAX_IDLE_PASSES passes without progress.

    Returns (sent, failed). ``exiting`` cuts the pauses short and ends at the first pass without progress.
    """
    if target.transport is None:
        return 0, 0
    sent = failed = idle = 0
    while has_pending(target.queue) and deadline.left() > 0 and idle < MAX_IDLE_PASSES:
        with queue_lock(target.queue) as locked:
            s, f = drain_pass(target, deadline, scrub) if locked else (0, 0)
        sent, failed = sent + s, failed + f
        idle = 0 if s else idle + 1
        if idle:
            if exiting.is_set():
                break
            exiting.wait(min(_pause(idle), max(0.0, deadline.left())))
    return sent, failed


class Drainer:
    """The background worker of one (process, queue): runs while the queue has events.

    Never blocks the emitting thread (``kick`` only starts a thread) and never keeps the process
    alive: a daemon thread, waited for at exit at most ``exit_wait_s`` (``stop``).
    """

    def __init__(self, target: Target, scrub: set[str], exit_wait_s: float) -> None:
        self.target = target
        self.scrub = scrub
        self.exit_wait_s = exit_wait_s
        self.deadline = Deadline()
        self.worker = Worker(f"provline-lineage-{target.name}", self._drain, self._failed)

    def kick(self) -> None:
        self.worker.kick()

    def stop(self, at: float) -> None:
        """Send nothing new after ``at`` (monotonic); wait until then for the thread to finish."""
        self.deadline.at = at
        self.worker.stop(at - time.monotonic())

    def _drain(self, exiting: threading.Event) -> None:
        drain(self.target, self.deadline, exiting, self.scrub)  # events queued meanwhile: kicked, so again

    def _failed(self, exc: Exception) -> None:  # e.g. an unreadable outbox folder: the next kick retries
        log.warning("OpenLineage delivery to %s stopped: %s", self.target.name, redact(exc, self.scrub))


_drainers: dict[Path, Drainer] = {}
_drainers_lock = threading.Lock()


def drainer_for(target: Target, scrub: set[str], exit_wait_s: float) -> Drainer:
    """This process's drainer of the target's queue, sending with the latest transport."""
    with _drainers_lock:
        drainer = _drainers.get(target.queue)
        if drainer is None:
            drainer = _drainers[target.queue] = Drainer(target, scrub, exit_wait_s)
        drainer.target, drainer.scrub = target, scrub
        return drainer


def stop_drainers(queues: list[Path] | None = None, wait_s: float | None = None) -> None:
    """Stop (and forget) this process's drainers, waiting at most ``wait_s`` (default: their exit wait)."""
    with _drainers_lock:
        chosen = [q for q in _drainers if queues is None or q in queues]
        stopping = [_drainers.pop(q) for q in chosen]
    if not stopping:
        return
    at = time.monotonic() + (wait_s if wait_s is not None else max(d.exit_wait_s for d in stopping))
    for drainer in stopping:
        drainer.stop(at)


at_exit(stop_drainers)


def _forget_drainers() -> None:
    """In a forked child: no drainers, and the lock may have been held by a thread that is gone."""
    global _drainers_lock
    _drainers_lock = threading.Lock()
    _drainers.clear()


os.register_at_fork(after_in_child=_forget_drainers)


# ---- delivery -------------------------------------------------------------------------------


class Delivery:
    """Sends an event to every target: local ones directly, the others through the outbox."""

    def __init__(self, settings: Settings, config: dict[str, Any]) -> None:
        self.exit_wait_s = settings.lineage_exit_wait_s
        self.targets = build_targets(config, settings.outbox_dir)
        self.scrub = secrets_of(config)

    def send(self, event: Any) -> None:
        cache: list[str] = []

        def payload() -> str:  # serialized once, and only if some target needs the outbox
            if not cache:
                cache.append(Serde.to_json(event))
            return cache[0]

        for target in self.targets:
            try:
                self._send_one(target, event, payload)
            except Exception as exc:  # noqa: BLE001 - outbox failed too (disk full...): log, go on
                log.warning("OpenLineage event for %s lost: %s", target.name, redact(exc, self.scrub))

    def _send_one(self, target: Target, event: Any, payload: Callable[[], str]) -> None:
        if target.direct and not has_pending(target.queue):  # an event never overtakes the queue
            assert target.transport is not None
            try:
                target.transport.emit(event)
                return
            except Exception as exc:  # noqa: BLE001 - any transport error means "not delivered"
                log.warning(
                    "OpenLineage %s refused an event, kept in the outbox: %s", target.name, redact(exc, self.scrub)
                )
        enqueue(target.queue, payload())
        if target.transport is not None:
            drainer_for(target, self.scrub, self.exit_wait_s).kick()

    def close(self) -> None:
        """Wait at most the exit wait for the queues to drain, then release the transports."""
        stop_drainers([t.queue for t in self.targets], self.exit_wait_s)
        close_targets(self.targets)


def close_targets(targets: list[Target]) -> None:
    for target in targets:
        try:
            if target.transport is not None:
                target.transport.close()
        except Exception as exc:  # noqa: BLE001 - closing is best effort
            log.debug("closing OpenLineage transport %s failed: %s", target.name, type(exc).__name__)


def replay(settings: Settings) -> ReplayResult:
    """Resend every queued event with the current transport config, retrying within the replay budget.

    This process's background drainers stop first: replay takes over their queues.
    """
    stop_drainers(wait_s=0)
    _, _, config = load_client_config(settings, REPLAY_RETRY)
    targets = {t.queue.name: t for t in build_targets(config, settings.outbox_dir)}
    scrub = secrets_of(config)
    deadline = Deadline(time.monotonic() + settings.lineage_replay_budget_s)
    sent = failed = remaining = 0
    outbox = settings.outbox_dir
    for queue in sorted(p for p in outbox.iterdir() if p.is_dir()) if outbox.is_dir() else []:
        target = targets.get(queue.name)
        if target is None:
            log.warning("OpenLineage outbox queue %s has no configured transport; left in place", queue.name)
        else:
            s, f = drain(target, deadline, threading.Event(), scrub)
            sent, failed = sent + s, failed + f
        remaining += len(pending(queue))
    close_targets(list(targets.values()))
    return ReplayResult(sent=sent, failed=failed, remaining=remaining)
