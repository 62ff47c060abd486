"""Browser tests: a screenshot of the page into the test's tmp dir when a test fails."""

from __future__ import annotations

import pytest


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    page = getattr(item, "funcargs", {}).get("page")
    if report.when == "call" and report.failed and page is not None:
        shot = item.funcargs["tmp_path"] / "failure.png"
        page.screenshot(path=shot, full_page=True)
        report.sections.append(("screenshot", f"{shot} ({page.url})"))
    return report
