"""What the UI shows of the resources' configuration (issue 24, item 1): the warehouse and the settings every step
uses. A value the environment sets is Dagster's EnvVar, shown by the variable's name, never its value — a DuckLake
conninfo may carry a password, an alert webhook's URL is its credential. Asked of a real dagster-webserver through its
GraphQL API, as the UI asks it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from ..conftest import REPO, _isolate
from .test_ui import INSTANCE_CONFIG, _free_port, _wait_until_serving

pytestmark = pytest.mark.e2e

SECRET = "s3cret-pass"
WEBHOOK_TOKEN = "T000/B000/w3bh00k-s3cret"
QUERY = """{ allTopLevelResourceDetailsOrError(repositorySelector: {repositoryLocationName: "pipelines.definitions",
             repositoryName: "__repository__"}) {
    ... on ResourceDetailsList { results { name configuredValues { key value type } } }
    ... on PythonError { message } } }"""


def test_the_ui_shows_the_settings_by_variable_never_a_password(tmp_path: Path):
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(INSTANCE_CONFIG)
    url, log = f"http://127.0.0.1:{_free_port()}", tmp_path / "webserver.log"
    conninfo = f"dbname=lake host=127.0.0.1 port=5432 user=provline password={SECRET}"
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, tmp_path / "provline")
        mp.setenv("DAGSTER_HOME", str(dagster_home))
        mp.setenv("PROVLINE_WAREHOUSE", f"ducklake:postgres:{conninfo}")
        mp.setenv("PROVLINE_LAKE_DATA_PATH", str(tmp_path / "lake"))
        mp.setenv("PROVLINE_ALERT_WEBHOOK_URL", f"https://hooks.example.com/services/{WEBHOOK_TOKEN}")
        mp.setenv("PROVLINE_RANGE_CHUNK_ROWS", "250000")
        with log.open("w") as out:
            server = subprocess.Popen(
                [str(Path(sys.executable).parent / "dagster-webserver"), "-w", str(REPO / "workspace.yaml"),
                 "-h", "127.0.0.1", "-p", url.rsplit(":", 1)[1]],
                cwd=REPO, env=os.environ.copy(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_until_serving(url, server, log)
        request = urllib.request.Request(f"{url}/graphql", data=json.dumps({"query": QUERY}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            body = response.read().decode()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    assert SECRET not in body and WEBHOOK_TOKEN not in body
    resources = {r["name"]: r for r in json.loads(body)["data"]["allTopLevelResourceDetailsOrError"]["results"]}
    shown = {v["key"]: (v["type"], v["value"]) for v in resources["warehouse"]["configuredValues"]}
    assert shown["url"] == ("ENV_VAR", "PROVLINE_WAREHOUSE")
    assert shown["lake_data_path"] == ("ENV_VAR", "PROVLINE_LAKE_DATA_PATH")
    assert shown["home"] == ("ENV_VAR", "PROVLINE_HOME")  # the tests' PROVLINE_HOME, set by _isolate
    assert shown["name"] == ("VALUE", '"warehouse"')  # a default, set by no variable
    settings = {v["key"]: (v["type"], v["value"]) for v in resources["settings"]["configuredValues"]}
    assert settings["alert_webhook_url"] == ("ENV_VAR", "PROVLINE_ALERT_WEBHOOK_URL")
    assert settings["warehouse_url"] == ("ENV_VAR", "PROVLINE_WAREHOUSE")
    assert settings["range_chunk_rows"] == ("ENV_VAR", "PROVLINE_RANGE_CHUNK_ROWS")
    assert settings["checks_per_run"] == ("VALUE", "false")  # a default, set by no variable
    assert SECRET not in log.read_text() and WEBHOOK_TOKEN not in log.read_text()
