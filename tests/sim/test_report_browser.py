"""The simulation report in headless Chromium: every figure is loaded (naturalWidth > 0).

Uses the Debian packages ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) through
Selenium with the system driver (no driver download). A screenshot of the page is kept in
``tests/artifacts/report.png`` (gitignored by ``tests/artifacts/.gitignore``) and its path printed.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from .simulate_helpers import noon_run

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--disable-dev-shm-usage", "--window-size=1200,900")


@pytest.fixture
def browser(require_tool):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = require_tool("chromium")
    driver_path = require_tool("chromedriver")
    profile = tempfile.mkdtemp(prefix="gridshare-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_report_figures_load_in_chromium(browser):
    _, result, index = noon_run()
    browser.get(index.resolve().as_uri())
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, "
        "i.naturalWidth, i.naturalHeight]);")
    assert len(images) == 10, images
    for src, complete, width, height in images:
        assert complete and width > 0 and height > 0, (src, width, height)
    ids = browser.execute_script(
        "return Array.from(document.querySelectorAll('figure')).map(f => f.id);")
    for key in ("ocm_bands", "ocm_voltages", "ocm_boxplots", "loading", "nr", "nr_operated",
                "operation",
                "battery", "prices", "aggregator"):
        assert f"fig-{key}" in ids
    checks = browser.execute_script(
        "return Array.from(document.querySelectorAll('li span')).map(s => s.textContent);")
    assert checks and set(checks) == {"PASS"}, checks
    title = browser.title
    assert "heimschuh-like" in title
    browser.set_window_size(1200, int(browser.execute_script(
        "return document.body.scrollHeight;")) + 100)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    print(f"report screenshot: {shot}")
    assert result.summary["ok"]
