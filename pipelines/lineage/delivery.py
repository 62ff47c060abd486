"""Getting events to the configured transports without ever failing, stalling or losing one.

The transports are openlineage-python's own, configured the standard way (openlineage.yml,
OPENLINEAGE__TRANSPORT__* / OPENLINEAGE_URL, via the client's config loader). Default when nothing is
configured: the file transport appending JSONL to PROVLINE_HOME/lineage/events.jsonl.

What 1.54 does and what we do about it
- HttpTransport.emit raises on 4xx/5xx (``raise_for_status``) and on connection errors/timeouts,
  so "refused" = "emit raised". But its default urllib3 retry (5 retries, backoff 0.3, 500-504 in the
  forcelist) turns one refused event into ~10 s and one hanging backend into 6 x timeout. We cap
  ``timeout`` at PROVLINE_LINEAGE_TIMEOUT_S and turn its retries off: the outbox is the retry.
- CompositeTransport.emit raises only when *every* child failed (continue_on_failure=True), so one
  refusing child would silently lose the event. We emit to each child ourselves and give each its own
  outbox queue: an event is delivered to a child exactly when that child took it. (With
  continue_on_success=False, a failover composite, the composite is one target, as the library means.)

Outbox: PROVLINE_HOME/outbox/<target>/<wall-clock ns>-<pid>-<uuid>.json, one event per file, written
temp + fsync + rename + dir fsync. File names sort in emission order (per process, strictly
increasing). While a target's queue is not empty, new events join the queue instead of overtaking it.
A target that failed is left alone for BREAKER_COOLDOWN_S (a marker file, shared across the step
processes), so a dead backend costs one outbox write per event, not one timeout.
Draining (``replay`` and the emitter's opportunistic drain) holds an flock on the queue, sends in
order, deletes each file once its transport accepted it and stops at the first refusal. A crash
between "accepted" and "deleted" re-sends that one event: identical bytes, so a receiver deduping on
(runId, eventType, eventTime) sees it once.
The outbox stores the event only, never transport config, so no credential is written to disk.
"""

from __future__ import annotations

import copy
import fcntl
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openlineage.client import OpenLineageClient
from openlineage.client.serde import Serde
from openlineage.client.transport import get_default_factory
from openlineage.client.transport.composite import CompositeTransport
from openlineage.client.transport.transport import Config, Transport

from pipelines.settings import Settings, openlineage_environment

log = logging.getLogger(__name__)

BREAKER_COOLDOWN_S = 30.0
DEFAULT_QUEUE = "default"
# The outbox is the retry: one attempt per emission keeps the stall bounded by the timeout.
NO_RETRY: dict[str, Any] = {
    "total": 0,
    "connect": 0,
    "read": 0,
    "status": 0,
    "backoff_factor": 0,
    "status_forcelist": [],
    "allowed_methods": ["POST"],
}
_SECRET_KEY = re.compile(r"key|secret|token|password|credential", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


@dataclass(frozen=True)
class ReplayResult:
    sent: int
    failed: int
    remaining: int


@dataclass
class Target:
    """One place events must reach: a transport and its outbox queue."""

    name: str
    transport: Transport | None
    queue: Path


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


def transport_config(settings: Settings, loaded: dict[str, Any] | None) -> dict[str, Any]:
    """The transport config the client loaded, or our file default, bounded in time."""
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
    return _bounded(config, settings.lineage_timeout_s)


def _bounded(config: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    kind = str(config.get("type", "")).lower()
    if kind in ("http", "async_http"):
        config["timeout"] = min(float(config.get("timeout", timeout_s)), timeout_s)
        if kind == "http":
            config["retry"] = dict(NO_RETRY)
    elif kind == "composite":
        children = config.get("transports") or {}
        items = children.values() if isinstance(children, dict) else children
        for child in items:
            if isinstance(child, dict):
                _bounded(child, timeout_s)
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


def load_client_config(settings: Settings) -> tuple[OpenLineageClient, _Capture, dict[str, Any]]:
    """A client that only applies its config to events, and the transport config it loaded."""
    capture = _Capture()
    client = OpenLineageClient(transport=capture)
    return client, capture, transport_config(settings, client.config.transport)


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


def breaker_open(queue: Path) -> bool:
    try:
        return time.time() - (queue / ".down").stat().st_mtime < BREAKER_COOLDOWN_S
    except FileNotFoundError:
        return False


def trip_breaker(queue: Path) -> None:
    queue.mkdir(parents=True, exist_ok=True)
    (queue / ".down").touch()


def reset_breaker(queue: Path) -> None:
    (queue / ".down").unlink(missing_ok=True)


@contextmanager
def queue_lock(queue: Path, blocking: bool) -> Iterator[bool]:
    """flock on the queue: one drainer at a time, across processes. Yields whether we hold it."""
    queue.mkdir(parents=True, exist_ok=True)
    with open(queue / ".lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def drain(target: Target, deadline: float | None, scrub: set[str]) -> tuple[int, int]:
    """Send the queue in order until empty, a refusal, or the deadline. Caller holds the lock.

    Returns (sent, failed).
    """
    sent = 0
    if target.transport is None:
        return 0, 0
    for path in pending(target.queue):
        if deadline is not None and time.monotonic() >= deadline:
            break
        try:
            event = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("OpenLineage outbox file %s is unreadable (%s); left in place", path.name, exc)
            return sent, 1
        try:
            target.transport.emit(event)
        except Exception as exc:  # noqa: BLE001 - any transport error means "not delivered"
            trip_breaker(target.queue)
            log.warning("OpenLineage %s refused a queued event: %s", target.name, redact(exc, scrub))
            return sent, 1
        path.unlink()
        sent += 1
    if not has_pending(target.queue):
        reset_breaker(target.queue)
    return sent, 0


def redact(exc: BaseException, scrub: set[str]) -> str:
    text = f"{type(exc).__name__}: {exc}"
    text = _URL_USERINFO.sub("", text)
    for secret in scrub:
        text = text.replace(secret, "***")
    return text[:500]


# ---- delivery -------------------------------------------------------------------------------


class Delivery:
    """Sends an event to every target; what a target does not take goes to its outbox queue."""

    def __init__(self, settings: Settings, config: dict[str, Any]) -> None:
        self.timeout_s = settings.lineage_timeout_s
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
        if target.transport is None:
            enqueue(target.queue, payload())
            return
        if has_pending(target.queue):
            # Join the queue behind older events, then try to flush it within the time budget.
            enqueue(target.queue, payload())
            if not breaker_open(target.queue):
                with queue_lock(target.queue, blocking=False) as locked:
                    if locked:
                        drain(target, time.monotonic() + self.timeout_s, self.scrub)
            return
        if breaker_open(target.queue):
            enqueue(target.queue, payload())
            return
        try:
            target.transport.emit(event)
        except Exception as exc:  # noqa: BLE001 - any transport error means "not delivered"
            enqueue(target.queue, payload())
            trip_breaker(target.queue)
            log.warning(
                "OpenLineage %s refused an event, kept in the outbox: %s",
                target.name,
                redact(exc, self.scrub),
            )


def close_targets(targets: list[Target]) -> None:
    for target in targets:
        try:
            if target.transport is not None:
                target.transport.close()
        except Exception as exc:  # noqa: BLE001 - closing is best effort
            log.debug("closing OpenLineage transport %s failed: %s", target.name, type(exc).__name__)


def replay(settings: Settings) -> ReplayResult:
    """Resend every queued event in order with the current transport config; never raises on refusal."""
    _, _, config = load_client_config(settings)
    targets = {t.queue.name: t for t in build_targets(config, settings.outbox_dir)}
    scrub = secrets_of(config)
    sent = failed = remaining = 0
    queues = sorted(p for p in settings.outbox_dir.iterdir() if p.is_dir()) if settings.outbox_dir.is_dir() else []
    for queue in queues:
        target = targets.get(queue.name)
        if target is None:
            log.warning("OpenLineage outbox queue %s has no configured transport; left in place", queue.name)
        else:
            with queue_lock(queue, blocking=True):
                s, f = drain(target, None, scrub)
            sent, failed = sent + s, failed + f
        remaining += len(pending(queue))
    close_targets(list(targets.values()))
    return ReplayResult(sent=sent, failed=failed, remaining=remaining)
