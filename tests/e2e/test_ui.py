"""The Dagster UI in a real browser (issue 11, items 1, 4, 5, 7; issue 21, items 1-5): a real dagster-webserver
serving the code location over a tmp Dagster instance, read by Debian's chromium through playwright.

2013-02-12 quarantines a 1048 mph wind reading; 2013-01-17, materialized later, passes every check. The UI
must keep each partition's own check status and quarantine count."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from pipelines.cli import main
from pipelines.definitions import defs
from pipelines.factory import resources

from ..conftest import REPO, _isolate, require

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module", autouse=True)
def chromium() -> None:
    """Asked first: without a browser the module skips before it starts a webserver."""
    require("chromium", CHROMIUM.exists(), "apt-get install -y chromium (Debian's; never `playwright install`)")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WINDY_DAY, LATER_DAY = "2013-02-12", "2013-01-17"
RANGE = ["2013-01-14", "2013-01-15", "2013-01-16"]  # built by `provline run --start --end` (issue 21)
WEATHER = ["raw/weather", "staging/weather"]
INSTANCE_CONFIG = "nux:\n  enabled: false\ntelemetry:\n  enabled: false\n"  # no "Join the community" modal
TIMEOUT_MS = 60_000  # a cold page on a loaded 2-core machine


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_serving(url: str, server: subprocess.Popen, log: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.poll() is None, f"dagster-webserver exited {server.returncode}:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"dagster-webserver not serving after {timeout_s} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The UI's address: dagster-webserver with workspace.yaml on a free loopback port, over a tmp DAGSTER_HOME
    in which WINDY_DAY and then LATER_DAY of the weather tables were materialized."""
    tmp = tmp_path_factory.mktemp("ui")
    dagster_home = tmp / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(INSTANCE_CONFIG)
    url, log = f"http://127.0.0.1:{_free_port()}", tmp / "webserver.log"
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, tmp / "provline")
        mp.setenv("DAGSTER_HOME", str(dagster_home))
        with log.open("w") as out:
            server = subprocess.Popen(
                [str(Path(sys.executable).with_name("dagster-webserver")), "-w", "workspace.yaml",
                 "-h", "127.0.0.1", "-p", url.rsplit(":", 1)[1]],
                cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            with dg.DagsterInstance.get() as instance:
                for day in (WINDY_DAY, LATER_DAY):
                    assert dg.materialize(list(defs.assets), selection=dg.AssetSelection.assets(*WEATHER),
                                          partition_key=day, instance=instance,
                                          resources=resources()).success
            # then as a user runs a range from the CLI: the reference tables and RANGE, through the domain's jobs
            run = subprocess.run([str(Path(sys.executable).with_name("provline")), "run", "--start", RANGE[0],
                                  "--end", RANGE[-1]], cwd=REPO, capture_output=True, text=True, timeout=900)
            assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
            _wait_until_serving(url, server, log)
            yield url
        finally:
            os.killpg(server.pid, signal.SIGTERM)  # the webserver and the code server it started
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, tmp_path: Path) -> Iterator[Page]:
    """A fresh page; on failure, conftest.py saves a screenshot of it as tmp_path/failure.png."""
    page = browser.new_page(viewport={"width": 1600, "height": 1100})
    page.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    yield page
    page.close()


def _metadata_row(page: Page, label: str):
    return page.locator("tr").filter(has=page.get_by_text(label, exact=True)).filter(visible=True)


def _select_check_partition(page: Page, partition: str) -> None:
    page.locator("input[placeholder^='Filter by partition']").fill(partition)
    page.get_by_text(partition, exact=True).filter(visible=True).last.click()


def test_each_partition_keeps_its_check_status_and_quarantine_count(ui: str, page: Page):
    page.goto(f"{ui}/assets/staging/weather?view=checks&checkDetail=quarantine")
    listed = page.locator("span", has=page.locator("[title=quarantine]")).first  # the list of checks
    expect(listed).to_contain_text("Failed")  # LATER_DAY ran after WINDY_DAY and passed
    page.locator("button[role=tab][title=Partitions]").click()
    expect(page.get_by_text("Failed (1)", exact=True)).to_be_visible()
    expect(page.get_by_text(f"Passed ({1 + len(RANGE)})", exact=True)).to_be_visible()

    _select_check_partition(page, WINDY_DAY)
    expect(page.get_by_text("Failed", exact=True).filter(visible=True).first).to_be_visible()
    expect(_metadata_row(page, "quarantined_rows")).to_contain_text("1")
    expect(_metadata_row(page, "failing_rows")).to_contain_text("1")

    _select_check_partition(page, LATER_DAY)
    expect(page.get_by_text("Passed", exact=True).filter(visible=True).first).to_be_visible()
    expect(_metadata_row(page, "quarantined_rows")).to_contain_text("0")


def test_the_partition_shows_its_materialization_and_quarantine_count(ui: str, page: Page):
    page.goto(f"{ui}/assets/staging/weather?view=partitions&partition={WINDY_DAY}")
    expect(page.get_by_text(f"Materialized ({2 + len(RANGE)})", exact=True)).to_be_visible()
    expect(_metadata_row(page, "quarantined_rows")).to_contain_text("1")
    expect(_metadata_row(page, "input_rows")).to_contain_text("72")
    expect(_metadata_row(page, "dagster/row_count")).to_contain_text("71")


def test_metadata_plots_over_the_materializations(ui: str, page: Page):
    """By event: Dagster 1.13 plots by partition over the 120 days before today, not before the partitions' end
    (see test_ui_metadata.py), so 2013's partitions only plot by event."""
    page.goto(f"{ui}/assets/staging/weather")
    page.locator("button").filter(has_text="Plots").filter(visible=True).first.click()
    page.locator("button").filter(has_text="Events").filter(visible=True).first.click()
    expect(page.get_by_text("quarantined_rows", exact=True).filter(visible=True)).to_be_visible()
    expect(page.locator("canvas").first).to_be_visible()


def test_graph_nodes_show_their_layer(ui: str, page: Page):
    page.goto(f"{ui}/locations/__repository__@pipelines.definitions/asset-groups/flights")
    for layer, nodes in (("raw", 2), ("staging", 2), ("marts", 3)):
        expect(page.get_by_text(layer, exact=True).filter(visible=True)).to_have_count(nodes)


# --- issue 21: what the UI says must be true, round 2 ------------------------------------------------------


def _provline_run(ui: str) -> dg.DagsterRun:
    with dg.DagsterInstance.get() as instance:
        (run,) = [r for r in instance.get_runs() if r.tags.get("dagster/asset_partition_range_start") == RANGE[0]]
    return run


def test_a_provline_run_is_on_its_job_page_in_the_timeline_and_can_be_re_executed(ui: str, page: Page):
    run = _provline_run(ui)
    assert run.job_name == "flights_daily"
    page.goto(f"{ui}/locations/__repository__@pipelines.definitions/jobs/flights_daily/runs")
    expect(page.get_by_text(run.run_id[:8]).filter(visible=True).first).to_be_visible()
    page.goto(f"{ui}/runs/{run.run_id}")
    reexecute = page.get_by_role("button", name=re.compile("Re-execute")).filter(visible=True).first
    expect(reexecute).to_be_visible()
    expect(reexecute).to_be_enabled()
    page.goto(f"{ui}/overview/activity/timeline")
    expect(page.get_by_role("link", name="flights_daily").filter(visible=True).first).to_be_visible()


def test_a_partition_built_in_a_range_is_not_unsynced(ui: str, page: Page):
    page.goto(f"{ui}/assets/marts/flight_facts?view=partitions&partition={RANGE[1]}")
    expect(_metadata_row(page, "dagster/row_count")).to_contain_text("894")  # the partition's page is there
    expect(page.get_by_text("Unsynced")).to_have_count(0)


def test_no_verdict_yet_is_not_shown_as_passed(ui: str, page: Page):
    """Fewer than 7 earlier partitions: the monitors have no verdict and Dagster gets no `anomalies` evaluation."""
    page.goto(f"{ui}/assets/marts/flight_facts?view=checks")
    checks = page.locator("span", has=page.locator("[title=warnings]")).first
    expect(checks).to_contain_text("Succeeded")  # the list is there (a normal day: its warnings pass)
    anomalies = page.locator("span", has=page.locator("[title=anomalies]")).first
    expect(anomalies).to_be_visible()
    print("anomalies, as the UI lists it:", anomalies.inner_text())
    expect(anomalies).not_to_contain_text(re.compile("Succeeded|Passed"))


def test_the_audit_report_draws_the_column_lineage(ui: str, page: Page, tmp_path: Path):
    report = tmp_path / "report.html"
    assert main(["audit", "report", "marts.flight_facts", "--partition", RANGE[1], "--no-verify",
                 "--out", str(report)]) == 0
    page.goto(report.as_uri())
    expect(page.get_by_role("heading", name="Column lineage")).to_be_visible()
    drawn = page.locator("svg[aria-label='column lineage']")
    expect(drawn.locator("g.output-column", has_text="airline_name")).to_be_visible()
    expect(drawn.locator("g.input-column", has_text="staging.airlines.name")).to_be_visible()
    assert drawn.locator("line.column-edge").count() > 20
    box = drawn.bounding_box()
    assert box is not None and box["width"] > 500 and box["height"] > 200  # drawn, not an empty element


def test_the_trends_page_plots_each_partition(ui: str, page: Page, tmp_path: Path):
    trends = tmp_path / "trends.html"
    assert main(["health", "--trends", str(trends)]) == 0
    page.goto(trends.as_uri())
    facts = page.locator("section[data-asset='marts.flight_facts']")
    rows = facts.locator("figure[data-series='rows written']")
    expect(rows.locator("polyline")).to_be_visible()
    expect(rows.locator("circle")).to_have_count(len(RANGE))
    expect(rows.locator("circle title").nth(1)).to_have_text(f"{RANGE[1]}: 894")
    for series in ("rows quarantined", "rows failing a contract rule", "mean of distance"):
        expect(facts.locator(f"figure[data-series='{series}']")).to_be_visible()
        expect(facts.locator(f"figure[data-series='{series}'] circle")).to_have_count(len(RANGE))
    weather = page.locator("section[data-asset='staging.weather'] figure[data-series='rows quarantined'] circle")
    expect(weather).to_have_count(2 + len(RANGE))  # the windy day's 1 among them
    assert "2013-02-12: 1" in weather.locator("title").all_text_contents()
