"""The local stack's status page in a real headless browser: Debian's Chromium, driven through its own
chromedriver by Selenium (WebDriver is the browsers' standard automation protocol, Selenium its reference
client; nothing is downloaded). Events replayed over HTTP show up on the page without a reload.

The screenshot lands in `.artifacts/` at the repository root (ignored by git)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from ld_audiences_cli.replay import replay
from ld_audiences_local.stack import LocalStack

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "events" / "segment"
ARTIFACTS = REPO_ROOT / ".artifacts"
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
SECRET = "status-page-secret-4c1e"
TOKEN = "api-status-page-token-77aa"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1100",
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("no Chromium: apt-get install chromium chromium-driver (.ci/run does it when run as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def shown_members(driver: Any) -> dict[str, int]:
    """Segment key -> member count, as the page shows them."""
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#segments tr[data-segment]')]"
        ".map(r => [r.dataset.segment, r.querySelector('td.members').textContent])"
    )
    return {key: int(count) for key, count in rows}


def test_the_status_page_follows_the_pipeline_without_a_reload(browser: Any) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    wait = WebDriverWait(driver, 20, poll_frequency=0.2)
    with LocalStack(port=0, webhook_secret=SECRET, launchdarkly_token=TOKEN, batching_window=0.2) as stack:
        driver.get(f"{stack.url}/")
        wait.until(lambda d: d.find_element("id", "live").text == "live")
        assert "no segments yet" in driver.find_element("id", "segments").text
        # A reload would start a new document without this.
        driver.execute_script("window.sameDocument = 'yes'")

        results = replay([FIXTURES], stack.url, SECRET)
        assert all(r.status == 200 for r in results), [r.line() for r in results]
        stack.wait_until_drained(30)
        assert stack.emulator is not None
        expected = {s["key"]: len(s["included"]) for s in stack.emulator.segments()}
        assert expected and any(expected.values())

        wait.until(lambda d: shown_members(d) == expected)
        wait.until(lambda d: d.find_element("id", "batches").text.count("ok") >= 1)
        assert driver.execute_script("return window.sameDocument") == "yes"
        element = driver.find_element
        assert (element("id", "queue-visible").text, element("id", "dlq-messages").text) == ("0", "0")
        accepted = sum(r.accepted or 0 for r in results)
        # The page refreshes every 1.5 s: the counter may trail the members by one refresh.
        wait.until(lambda d: int(d.find_element("id", "sync-records").text) >= accepted)

        ARTIFACTS.mkdir(exist_ok=True)
        screenshot = ARTIFACTS / "status-page.png"
        assert driver.save_screenshot(str(screenshot))
        print(f"screenshot: {screenshot}")

        shown = driver.page_source + json.dumps(requests.get(f"{stack.url}/status.json", timeout=10).json())
        assert SECRET not in shown and TOKEN not in shown
        logs = driver.get_log("browser")
        assert not [entry for entry in logs if entry["level"] == "SEVERE"], logs
