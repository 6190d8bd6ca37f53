"""``effsam2 app`` in a real browser: headless Chromium (Debian's chromium + chromium-driver) through selenium.

The app runs as its own process on a free local port with the default model and the bundled sample clip.
Without Chromium, chromedriver, selenium or gradio these tests are skipped, unless EFFSAM2_REQUIRE_BROWSER=1
(CI sets it, and .ci/run installs them), which turns a missing piece into a failure.
"""

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
DOG = (288, 231)  # a point on the dog in the sample clip's first frame (inside its stored box)
SAMPLE_WIDTH = 640


def _missing() -> str | None:
    for module in ("selenium", "gradio"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed"
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not Path(exe).exists() and shutil.which(Path(exe).name) is None:
            return f"{exe} not found (apt-get install chromium chromium-driver)"
    return None


missing = _missing()
if missing and os.environ.get("EFFSAM2_REQUIRE_BROWSER") == "1":
    raise RuntimeError(f"EFFSAM2_REQUIRE_BROWSER=1 but {missing}")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(missing is not None, reason=missing or "")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("app") / "server.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", "import sys; from effsam2.cli import main; sys.exit(main())",
                                 "app", "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(url, timeout=5).read()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"effsam2 app did not start:\n{log.read_text()}") from None
                time.sleep(1)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1100"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER if Path(CHROMEDRIVER).exists()
                                              else shutil.which("chromedriver")), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(condition, timeout: float = 60, what: str = "the page"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def _status(driver) -> str:
    """The object list ('' until the page has rendered it)."""
    found = driver.find_elements("css selector", "#status textarea")
    return found[0].get_attribute("value") if found else ""


def _message(driver) -> str:
    found = driver.find_elements("css selector", "#message")
    return found[0].text if found else ""


def _frame_image(driver) -> tuple[object, np.ndarray]:
    element = driver.find_element("css selector", "#frame img")
    with urllib.request.urlopen(element.get_attribute("src")) as r:
        return element, np.array(Image.open(io.BytesIO(r.read())).convert("RGB"))


def _click_on_frame(driver, x: int, y: int) -> None:
    """Click the frame image at pixel (x, y) of the video frame."""
    from selenium.webdriver.common.action_chains import ActionChains

    element = driver.find_element("css selector", "#frame img")
    scale = element.size["width"] / SAMPLE_WIDTH
    dx = round(x * scale - element.size["width"] / 2)
    dy = round(y * scale - element.size["height"] / 2)
    ActionChains(driver).move_to_element_with_offset(element, dx, dy).click().perform()


def _open(driver, url: str) -> None:
    driver.get(url)
    _wait(lambda: "dog.mp4: 60 frames" in _status(driver), 90, "the sample clip to load")


def test_click_track_and_download_in_a_real_browser(app_url, browser, tmp_path):
    _open(browser, app_url)
    _, before = _frame_image(browser)
    assert before.shape == (360, 640, 3)
    _click_on_frame(browser, *DOG)
    _wait(lambda: "object 1: frame 0: 1+" in _status(browser), 60, "the click to register")
    _, after = _frame_image(browser)
    changed = np.abs(after.astype(int) - before.astype(int)).sum(-1) > 30
    x, y = DOG
    assert changed[y - 3:y + 4, x - 3:x + 4].all()  # the mask (or the click mark) is drawn at the point
    assert changed.sum() > 2000  # a mask, not only the click mark

    browser.find_element("css selector", "#track").click()
    video = _wait(lambda: (browser.find_elements("css selector", "#overlay video") or [None])[0], 240,
                  "the overlay video")
    assert video.get_attribute("src").endswith("overlay.mp4")
    assert "Tracked 60 frames" in _message(browser)
    browser.save_screenshot(str(tmp_path / "app.png"))
    if os.environ.get("EFFSAM2_APP_SCREENSHOT"):
        browser.save_screenshot(os.environ["EFFSAM2_APP_SCREENSHOT"])

    link = _wait(lambda: browser.find_elements("css selector", "#masks-zip a"), 30, "the masks download")[0]
    with urllib.request.urlopen(link.get_attribute("href")) as r:
        archive = zipfile.ZipFile(io.BytesIO(r.read()))
    names = sorted(archive.namelist())
    assert len(names) == 60
    labels = [np.array(Image.open(archive.open(n))) for n in names]
    assert labels[0][y, x] == 1  # the download covers the clicked point
    assert all((lab == 1).sum() > 500 for lab in labels)  # every frame's mask is non-empty


def test_two_sessions_are_isolated_and_bad_uploads_are_a_message(app_url, browser, tmp_path):
    _open(browser, app_url)
    first = browser.current_window_handle
    _click_on_frame(browser, *DOG)
    _wait(lambda: "object 1: frame 0: 1+" in _status(browser), 60, "session A's click")

    browser.switch_to.new_window("tab")
    _open(browser, app_url)
    assert "No objects yet" in _status(browser)  # session B does not see A's object
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_text("this is not a video")
    browser.find_element("css selector", "#upload input[type=file]").send_keys(str(not_a_video))
    _wait(lambda: "⚠" in _message(browser), 60, "the upload error")
    assert "notes.mp4" in _message(browser) and "Traceback" not in browser.page_source
    browser.find_element("xpath", "//*[@id='object-picker']//label[contains(., 'object 2')]").click()
    _click_on_frame(browser, 100, 300)
    _wait(lambda: "object 2: frame 0: 1+" in _status(browser), 60, "session B's click")
    assert "object 1" not in _status(browser)

    browser.switch_to.window(first)
    browser.find_element("css selector", "#undo").click()  # A's only click goes
    _wait(lambda: "No objects yet" in _status(browser), 60, "session A's undo")
    assert "object 2" not in _status(browser)
    browser.switch_to.window(next(h for h in browser.window_handles if h != first))
    _click_on_frame(browser, 120, 300)
    _wait(lambda: "object 2: frame 0: 2+" in _status(browser), 60, "session B's second click")
