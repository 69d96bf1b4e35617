"""The Playground in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by Selenium against ``jaxmlp playground`` started as a subprocess on
a free 127.0.0.1 port. Skipped, with the reason, where Chromium or its driver is missing
(``.ci/run`` installs them)."""

from __future__ import annotations

import faulthandler
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
# The README's and the docs' picture: refreshed by JAXMLP_UPDATE_SCREENSHOT=1 pytest tests/test_playground_browser.py
SCREENSHOT = Path(__file__).parent.parent / "docs" / "img" / "playground.png"

selenium = pytest.importorskip(
    "selenium", reason="selenium is not installed (the dev extra has it)"
)
if CHROMIUM is None or DRIVER is None:
    pytest.skip(
        "headless Chromium or chromedriver not found (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture(autouse=True)
def watchdog():
    """A socket that never answers would hang the suite: end the process after 5 minutes
    (with every thread's traceback) instead."""
    faulthandler.dump_traceback_later(300, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jaxmlp", "playground", "--no-browser", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(
                    f"jaxmlp playground exited: {proc.stdout.read() if proc.stdout else ''}"
                )
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("jaxmlp playground did not listen within 120 s")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,900", "--no-first-run", "--disable-extensions"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    yield driver
    driver.quit()


def _epoch(driver) -> int:
    return int(driver.find_element(By.ID, "epoch").text.replace(",", "") or 0)


def _heatmap_pixels(driver) -> list[int]:
    return driver.execute_script(
        "const c = document.getElementById('heatmap');"
        "return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data"
        ".filter((_, i) => i % 97 === 0));"
    )


def _wait(driver, what, timeout=120.0):
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: what(d))


def test_play_trains_and_draws(server, browser, tmp_path):
    browser.get(server)
    _wait(browser, lambda d: d.find_element(By.ID, "loss-train").text not in ("", "–"))
    loss0 = float(browser.find_element(By.ID, "loss-train").text)
    pixels0 = _heatmap_pixels(browser)
    assert "activation=tanh" in browser.current_url and "networkShape=4,2" in browser.current_url

    browser.find_element(By.ID, "play-pause").click()
    _wait(browser, lambda d: _epoch(d) > 50)
    browser.find_element(By.ID, "play-pause").click()  # pause
    time.sleep(0.5)
    paused = _epoch(browser)
    time.sleep(0.6)
    assert _epoch(browser) == paused, "the epoch counter moved while paused"
    loss1 = float(browser.find_element(By.ID, "loss-train").text)
    assert loss1 < loss0, (loss0, loss1)
    pixels1 = _heatmap_pixels(browser)
    changed = sum(a != b for a, b in zip(pixels0, pixels1, strict=True))
    assert changed > len(pixels0) // 20, f"the heatmap barely changed: {changed} of {len(pixels0)}"

    browser.find_element(By.ID, "step").click()
    _wait(browser, lambda d: _epoch(d) == paused + 1, 30)

    Select(browser.find_element(By.ID, "dataset")).select_by_value("xor")
    _wait(browser, lambda d: "dataset=xor" in d.current_url and _epoch(d) == 0, 60)
    Select(browser.find_element(By.ID, "activation")).select_by_value("relu")
    _wait(browser, lambda d: "activation=relu" in d.current_url and _epoch(d) == 0, 60)
    browser.find_element(By.ID, "feature-xTimesY").click()
    _wait(browser, lambda d: "xTimesY=true" in d.current_url, 60)
    browser.find_element(By.ID, "show-test-data").click()
    browser.find_element(By.ID, "play-pause").click()
    _wait(browser, lambda d: _epoch(d) > 100)
    browser.find_element(By.ID, "play-pause").click()
    time.sleep(0.5)
    assert float(browser.find_element(By.ID, "loss-test").text) < 0.5
    assert browser.find_element(By.ID, "message").get_attribute("hidden") is not None
    shot = tmp_path / "playground.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    if os.environ.get("JAXMLP_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, SCREENSHOT)


def test_bad_link_shows_an_error(server, browser):
    browser.get(server + "#activation=banana&networkShape=4,2")
    _wait(browser, lambda d: d.find_element(By.ID, "message").get_attribute("hidden") is None, 60)
    text = browser.find_element(By.ID, "message-text").text
    assert "activation" in text and "banana" in text
