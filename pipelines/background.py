"""A process's background worker: one daemon thread that runs a piece of work while there is work.

The lineage outbox drainers (pipelines/lineage/delivery.py) and the alert sender (pipelines/monitor/alerts.py)
are workers. A worker
- never blocks its caller: `kick` only wakes the thread, or starts it;
- runs `work(stopping)` in rounds: it returns the seconds until it has work again (a retry due), or None
  (nothing left: the thread ends unless kicked during the round, and the next kick starts it again);
- never keeps the process alive: a daemon thread; `stop` sends nothing new and waits a bounded time;
- after a fork, is idle in the child (the parent's thread is not there, and its lock may have been held).

`at_exit` hooks run when the interpreter exits and when a multiprocessing child ends (Dagster's step
processes end with os._exit, where `atexit` would not run).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable

Work = Callable[[threading.Event], float | None]


class Worker:
    def __init__(self, name: str, work: Work, failed: Callable[[Exception], None]):
        """`failed` says (logs) why a round raised; the next kick tries again."""
        self.name, self.work, self.failed = name, work, failed
        self._reset()
        _workers.add(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def kick(self) -> None:
        with self._lock:
            self._wake.set()
            if self._thread is None and not self.stopping.is_set():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                wait = self.work(self.stopping)
            except Exception as error:  # noqa: BLE001 - e.g. a store locked too long: the next kick retries
                self.failed(error)
                wait = None
            with self._lock:
                if self.stopping.is_set() or (wait is None and not self._wake.is_set()):
                    self._thread = None
                    return
            self._wake.wait(wait)  # the next retry, or a new kick

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until the worker has nothing left to do in this process (a command about to exit, a test)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
        return self._thread is None

    def stop(self, timeout_s: float) -> None:
        """Start nothing new; wait at most `timeout_s` for the round under way."""
        self.stopping.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(max(0.0, timeout_s))


_workers: weakref.WeakSet[Worker] = weakref.WeakSet()
_exit_hooks: list[Callable[[], None]] = []


def at_exit(hook: Callable[[], None]) -> None:
    """Run `hook` when this process exits (hooks run last registered first)."""
    _exit_hooks.append(hook)


def _run_exit_hooks() -> None:
    for hook in reversed(_exit_hooks):
        hook()


def _idle_in_child() -> None:
    for worker in list(_workers):
        worker._reset()


# threading's own exit hook (private, no public equivalent): it runs at interpreter exit *and* at the end of a
# multiprocessing child (its bootstrap calls threading._shutdown before os._exit); `atexit` runs in the first only.
threading._register_atexit(_run_exit_hooks)  # type: ignore[attr-defined]
os.register_at_fork(after_in_child=_idle_in_child)
