"""The dashboard in headless Chromium against ``gridshare serve`` on anvil with a simulated hour.

One module fixture: an anvil of its own (the simulation moves its clock, which the session's
anvil must not see), ``gridshare.sim.Simulation`` on heimschuh-like from 11:30 (the warm-up
interval and two traded intervals, about 15 s), then ``gridshare serve`` on the deployment it
wrote, with a copy of its order store (so serve's relay never races the simulation's). The tests:

* the page loads without console errors and shows every flexibility with its band and metered
  power, the feeder graph with all buses (and their table), the compliance table with
  transaction links, the intervals and the health panels; it fits 1280x800 and a phone's width
  and starts with a skip link for keyboard users;
* the simulation settles a third interval while the page is open: the page shows it;
* a member signs through an injected EIP-1193 wallet (``window.ethereum`` stub whose
  ``eth_signTypedData_v4`` answer the test computes in Python with the member's key, from the
  typed data the page asked to sign) and sees only its own orders and statement; a signature
  made by ``gridshare.api.dashboard.sign`` pasted into the form shows another member's data;
* a full-page screenshot is taken; with ``GRIDSHARE_UPDATE_SCREENSHOT=1`` it replaces
  ``docs/dashboard.png`` (docs/dashboard.md shows it), else it goes to the test's temporary
  folder (a test run leaves the checkout as it was).

Needs anvil (npm) and the Debian packages ``chromium`` and ``chromium-driver``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from eth_account import Account
from eth_account.messages import encode_typed_data

from gridshare.api.dashboard.sign import read_proof
from gridshare.sim import Simulation, SimulationConfig
from tests.conftest import find_anvil, free_port, missing_tool, start_anvil

pytestmark = [pytest.mark.anvil, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
DOCS_SCREENSHOT = REPO / "docs" / "dashboard.png"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--disable-dev-shm-usage", "--window-size=1280,800")
CONFIG = SimulationConfig(hours=1.0, start_hour=11.5, seed=0, nr_steps=0, nr_random_points=0,
                          progress=False)
#: A stub EIP-1193 wallet: it records the typed data it is asked to sign and answers with the
#: signature the test hands to ``window.__resolveSignature``.
WALLET_STUB = """
window.__signRequests = [];
window.ethereum = {
  isStub: true,
  request: function (args) {
    if (args.method === "eth_requestAccounts" || args.method === "eth_accounts")
      return Promise.resolve([window.__walletAddress]);
    if (args.method === "eth_signTypedData_v4") {
      window.__signRequests.push(args.params);
      return new Promise(function (resolve) { window.__resolveSignature = resolve; });
    }
    return Promise.reject(new Error("unsupported " + args.method));
  }
};
"""


def _wait(predicate, timeout_s: float, what: str, poll_s: float = 0.2):
    end = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < end:
        with contextlib.suppress(Exception):
            last = predicate()
            if last:
                return last
        time.sleep(poll_s)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def _copy_store(src: Path, dst: Path) -> None:
    """A consistent copy of an SQLite file (WAL included) through the backup API."""
    with contextlib.closing(sqlite3.connect(src)) as a, \
            contextlib.closing(sqlite3.connect(dst)) as b:
        a.backup(b)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """(simulation, serve process, base URL, ...) after the warm-up and two traded intervals."""
    binary = find_anvil()
    if binary is None:
        missing_tool("anvil not installed (npm ci installs @foundry-rs/anvil-linux-amd64)")
    work = tmp_path_factory.mktemp("dashboard")
    node = start_anvil(binary, work)  # type: ignore[arg-type]
    proc = log = None
    try:
        out = work / "out"
        sim = Simulation(dataclasses.replace(CONFIG, chain=node.url), out)
        sim.setup()
        first = round(CONFIG.start_hour * 60) // sim.n_min
        sim.post_minutes(first * sim.n_min, None)  # warm-up
        records = [sim.run_interval(first + 1), sim.run_interval(first + 2)]
        assert all(r.settled for r in records), [r.note for r in records]
        _copy_store(out / "orders.sqlite", out / "serve-orders.sqlite")
        port = free_port()
        log = (work / "serve.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "gridshare.cli", "serve", "--deployment",
             str(out / "deployment.json"), "--rpc", node.url, "--port", str(port),
             "--db", str(out / "serve-orders.sqlite"), "--forecast", "ramps",
             "--ramp-coverage", "0.95", "--band-policy", "--battery-reserve-h", "8",
             "--battery-follows", "--reserve-station-kw", "7.4"],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "CI": ""})
        base = f"http://127.0.0.1:{port}"
        _wait(lambda: requests.get(base + "/dashboard/api/snapshot", timeout=30).ok, 90,
              f"gridshare serve: {(work / 'serve.log').read_text()[-2000:]}")
        yield SimpleNamespace(sim=sim, base=base, node=node, first=first, records=records,
                              out=out)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if log is not None:
            log.close()
        node.process.terminate()
        node.process.wait(timeout=10)


@pytest.fixture(scope="module")
def browser(site):
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        missing_tool("chromium and chromium-driver (Debian packages) not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="gridshare-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    member = site.sim.member_keys[0]
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {
        "source": f"window.__walletAddress = {json.dumps(member.address)};" + WALLET_STUB})
    try:
        driver.get(site.base + "/dashboard/?refresh=1000")
        _wait(lambda: driver.execute_script("return document.body.dataset.updates"), 30,
              "the first update")
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _js(driver, script: str):
    return driver.execute_script(script)


def test_page_shows_flexibilities_feeder_compliance_intervals(site, browser):
    d, sim = browser, site.sim
    assert _errors(d) == []
    flex = _js(d, "return Array.from(document.querySelectorAll('#flex-list .flex')).map(a => "
                  "[a.dataset.name, a.querySelector('.band-now').textContent, "
                  "a.querySelector('.metered-now').textContent, "
                  "a.querySelectorAll('svg rect').length, "
                  "a.querySelector('svg path').getAttribute('d').length]);")
    assert sorted(f[0] for f in flex) == sorted(sim.flex_names)
    for name, band, metered, n_band_rects, path_len in flex:
        assert "kW" in band and band != "none", (name, band)
        assert "kW" in metered and not metered.startswith("–"), (name, metered)
        assert n_band_rects >= 2 and path_len > 20, (name, n_band_rects, path_len)
    buses = _js(d, "return Array.from(document.querySelectorAll('#feeder-svg g.bus')).map("
                   "g => [Number(g.dataset.bus), g.dataset.state]);")
    assert sorted(b for b, _ in buses) == sorted(int(b) for b in sim.feeder.bus_ids)
    metered = {b for b, s in buses if s != "not metered"}
    assert len(metered) >= 20  # customers, flexibilities and the transformer's bus
    assert _js(d, "return document.querySelectorAll('#bus-table tbody tr').length") == len(buses)
    assert "buses metered" in _js(d, "return document.querySelector('#feeder-desc').textContent")
    rows = _js(d, "return Array.from(document.querySelectorAll('#compliance-table tbody tr'))"
                  ".map(r => [Number(r.dataset.interval), Number(r.dataset.device), "
                  "r.querySelectorAll('a').length, r.textContent]);")
    traded = {r.interval for r in site.records}
    assert {i for i, *_ in rows} >= traded
    checked = [r for r in rows if r[0] in traded]
    assert len(checked) == len(traded) * len(sim.flex_names)
    assert all(n_links >= 2 and "inside" in text for _, _, n_links, text in checked), checked
    link = _js(d, "return document.querySelector('#compliance-table tbody a').href")
    tx = requests.get(link, timeout=10).json()
    assert tx["status"] == 1 and tx["to_name"] in ("GridCapacity", "GridMarket") and tx["events"]
    assert "Compliant" in _js(d, "return document.querySelector('#compliance-summary')"
                                 ".textContent")
    settled = _js(d, "return Array.from(document.querySelectorAll('#intervals-table tbody tr'))"
                     ".filter(r => r.dataset.settled === 'true').map(r => "
                     "Number(r.dataset.interval));")
    assert set(settled) == traded
    _wait(lambda: _js(d, "return Array.from(document.querySelectorAll('#intervals-table "
                         "tbody tr')).filter(r => r.textContent.includes('equal')).length")
          == len(traded), 30, "the replays")
    # the audit's background checks: bands not stale (serve has the simulation's oracle
    # settings), loading computed for the traded intervals
    _wait(lambda: _js(d, "return Array.from(document.querySelectorAll('#compliance-table tbody "
                         "tr')).filter(r => r.textContent.includes('match')).length")
          >= len(checked), 60, "the stale-band check")
    assert "intervals computed" in _js(d, "return document.querySelector('#loading-note')"
                                          ".textContent")
    health = _js(d, "return ['#health-chain', '#health-oracle', '#health-relay'].map("
                    "s => document.querySelector(s).textContent);")
    assert "31337" in health[0] and "Rejected readings" in health[1] and "Orders waiting" in \
        health[2]
    assert _errors(d) == []


def test_page_fits_a_laptop_and_a_phone_and_starts_with_a_skip_link(browser):
    from selenium.webdriver.common.keys import Keys

    d = browser
    overflow = "return document.documentElement.scrollWidth - window.innerWidth;"
    assert _js(d, overflow) <= 0
    d.find_element("tag name", "body").send_keys(Keys.TAB)
    assert _js(d, "return document.activeElement.className") == "skip"
    d.set_window_size(390, 844)
    try:
        time.sleep(0.5)
        assert _js(d, overflow) <= 0  # tables and the graph scroll inside their boxes
        assert _js(d, "return document.querySelector('#feeder-svg').getBoundingClientRect()"
                      ".width") > 300
    finally:
        d.set_window_size(1280, 800)


def test_page_updates_when_a_new_interval_settles(site, browser):
    d = browser
    before = int(_js(d, "return document.body.dataset.updates"))
    rec = site.sim.run_interval(site.first + 3)
    assert rec.settled, rec.note
    selector = f"#intervals-table tbody tr[data-interval='{rec.interval}']"
    _wait(lambda: _js(d, f"return document.querySelector(\"{selector}\")?.dataset.settled")
          == "true", 30, "the new settled interval on the page")
    row = _js(d, f"return document.querySelector(\"{selector}\").textContent")
    price = rec.clearing_price_micro_eur_per_kwh / 1e6
    assert f"{price:.3f}" in row
    assert int(_js(d, "return document.body.dataset.updates")) > before
    _wait(lambda: _js(d, "return document.querySelectorAll(\"#compliance-table tbody "
                         f"tr[data-interval='{rec.interval}'] a\").length") >= 2, 30,
          "the new interval's compliance rows")
    assert _errors(d) == []


def _sign_typed(typed_json: str, key: bytes) -> str:
    typed = json.loads(typed_json)
    return "0x" + bytes(Account.sign_message(encode_typed_data(full_message=typed),
                                             key).signature).hex()


def test_member_signed_view_shows_only_its_data(site, browser, tmp_path):
    d, sim = browser, site.sim
    member = sim.member_keys[0]
    d.find_element("id", "wallet-sign").click()
    request = _wait(lambda: _js(d, "return window.__signRequests[0]"), 10, "the sign request")
    assert request[0].lower() == member.address.lower()
    typed = json.loads(request[1])
    assert typed["primaryType"] == "ReadAccess" and typed["domain"]["name"] == "gridshare-read"
    _js(d, f"window.__resolveSignature({json.dumps(_sign_typed(request[1], member.key))});")
    _wait(lambda: _js(d, "return document.querySelectorAll('#member-orders tbody tr').length"),
          15, "the member's orders")
    shown = _js(d, "return Array.from(document.querySelectorAll('#member-orders tbody tr'))"
                   ".map(r => r.dataset.prosumer);")
    assert set(shown) == {member.address}
    copied = {r.interval for r in site.records}  # the serve's store is a copy made then
    own = [r for r in sim.gateway.store.of_prosumer(member.address, 500, None)
           if r.order.interval in copied]
    assert len(shown) == len(own) > 0
    assert _js(d, "return document.querySelector('#member-who').dataset.member") == \
        member.address
    assert "On-chain balance" in _js(d, "return document.querySelector('#member-statement')"
                                        ".textContent")
    assert _errors(d) == []
    # a signature from the CLI helper, pasted: the other member's data, and only theirs
    other = sim.member_keys[1]
    proof = read_proof(sim.deployment, bytes(other.key), int(time.time()) + 300)
    for field_id, value in zip(("paste-member", "paste-expires", "paste-signature"),
                               proof.values(), strict=True):
        box = d.find_element("id", field_id)
        box.clear()
        box.send_keys(value)
    d.find_element("css selector", "#paste-form button[type=submit]").click()
    _wait(lambda: _js(d, "return document.querySelector('#member-who')?.dataset.member")
          == other.address, 15, "the other member's view")
    shown = _js(d, "return Array.from(document.querySelectorAll('#member-orders tbody tr'))"
                   ".map(r => r.dataset.prosumer);")
    assert shown and set(shown) == {other.address}
    _screenshot(d, DOCS_SCREENSHOT if os.environ.get("GRIDSHARE_UPDATE_SCREENSHOT") == "1"
                else tmp_path / "dashboard.png")
    # another member's address with this member's proof: refused, nothing shown
    d.find_element("id", "paste-member").clear()
    d.find_element("id", "paste-member").send_keys(member.address)
    d.find_element("css selector", "#paste-form button[type=submit]").click()
    _wait(lambda: "auth_invalid" in _js(d, "return document.querySelector('#member-view')"
                                           ".textContent"), 15, "the refusal")
    assert _js(d, "return document.querySelectorAll('#member-orders').length") == 0


def _screenshot(d, path: Path) -> None:
    """The whole page at 1280 px wide into ``path`` (PNG)."""
    height = int(_js(d, "return document.documentElement.scrollHeight"))
    d.set_window_size(1280, min(height + 120, 6000))
    time.sleep(0.5)
    try:
        assert d.save_screenshot(str(path))
        assert path.stat().st_size > 50_000
        print(f"dashboard screenshot: {path}")
    finally:
        d.set_window_size(1280, 800)
