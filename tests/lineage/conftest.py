"""Fixtures for the lineage tests: an isolated PROVLINE_HOME and a real HTTP lineage backend."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from lineage_support import Backend


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """PROVLINE_HOME in tmp_path, no OpenLineage config from the machine running the tests."""
    for key in [k for k in os.environ if k.startswith("OPENLINEAGE")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.openlineage/openlineage.yml
    monkeypatch.chdir(tmp_path)  # no ./openlineage.yml
    monkeypatch.setenv("PROVLINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PROVLINE_LINEAGE_TIMEOUT_S", "0.5")
    yield tmp_path / "home"
    # The client itself writes OPENLINEAGE__TRANSPORT__TRANSPORTS__DEFAULT_HTTP__* into os.environ
    # when OPENLINEAGE_URL is set; drop them (monkeypatch then restores what it saved).
    for key in [k for k in os.environ if k.startswith("OPENLINEAGE")]:
        del os.environ[key]


@pytest.fixture
def backend() -> Iterator[Backend]:
    server = Backend()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def http_env(home: Path, backend: Backend, monkeypatch: pytest.MonkeyPatch) -> Backend:
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "http")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__URL", backend.url)
    return backend
