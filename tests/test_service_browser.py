"""End to end in a real browser: headless Chromium drives the service's page.

Needs the Debian packages ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``,
``/usr/bin/chromedriver``) and Selenium; skips cleanly when any is missing. The service runs in
uvicorn on a free loopback port in a background thread; the browser uploads a simulated DICOM
through the page's file input, and the test reads the verdict the page shows, compares it
with the API's answer, and saves a screenshot.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from fixtures_service import (  # noqa: F401
    ContractForgeryDetector,
    ServiceArchive,
    service_archive,
    source_run,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
APT_HINT = "apt-get install -y chromium chromium-driver"
VERDICTS_TEXT = ("consistent", "MISMATCH", "UNKNOWN", "claim-not-in-model", "no-header-claim")


def _require_browser() -> None:
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not exe.is_file():
            pytest.skip(f"{exe} not found (install with: {APT_HINT})")
    pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    _require_browser()
    tmp_path = tmp_path_factory.mktemp("chrome")
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--window-size=1280,1200", f"--user-data-dir={tmp_path / 'chrome-profile'}"):
        opts.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    except WebDriverException as exc:
        pytest.skip(f"chromium could not start: {exc.msg}")
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _wait_state(driver, states: tuple[str, ...], timeout: float = 60.0) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def state(d):
        s = d.find_element(By.TAG_NAME, "body").get_attribute("data-state")
        return s if s in states else False

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(state)


def test_page_shows_verdict_and_forgery_map(browser, service_archive: ServiceArchive,  # noqa: F811
                                            tmp_path: Path) -> None:
    import httpx
    from selenium.webdriver.common.by import By

    from medforensics.source.verdicts import VERDICTS
    from medforensics.service.app import create_app
    from medforensics.service.server import BackgroundServer

    dicom = next(Path(r["path"]) for r in service_archive.rows if r.get("split") == "test")
    upload = tmp_path / "case 1.dcm"  # a name with a space, as users have
    shutil.copyfile(dicom, upload)
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not an image\n" * 10)

    detector = ContractForgeryDetector()
    app = create_app(service_archive.run, detector, tmp_dir=tmp_path / "uploads",
                     isolation="thread")  # the test counts the detector's calls
    with BackgroundServer(app) as srv:
        expected = httpx.post(f"{srv.url}/v1/identify",
                              files={"file": ("x.dcm", dicom.read_bytes())}, timeout=60).json()
        browser.get(srv.url + "/")
        assert _wait_state(browser, ("ready", "offline"), 30) == "ready"
        status = browser.find_element(By.ID, "status").text
        assert "forgery model loaded" in status

        browser.find_element(By.ID, "file").send_keys(str(upload))
        assert _wait_state(browser, ("done", "error")) == "done", \
            browser.find_element(By.ID, "error").text
        verdict = browser.find_element(By.ID, "verdict")
        assert verdict.text in VERDICTS and verdict.text == expected["verdict"]
        assert verdict.get_attribute("data-verdict") == expected["verdict"]
        assert browser.find_element(By.ID, "message").text == expected["message"]
        assert browser.find_element(By.ID, "filename").text == "case 1.dcm"
        assert browser.find_element(By.ID, "claim").text == expected["header_claim"]
        rows = browser.find_elements(By.CSS_SELECTOR, "#top tbody tr")
        assert [r.find_elements(By.TAG_NAME, "td")[1].text for r in rows] == \
            [t["label"] for t in expected["top"][:3]]
        assert browser.find_element(By.ID, "forgery-verdict").text == "tampered"
        assert browser.find_element(By.ID, "forgery-score").text == "0.900"
        # the flagged areas listed as the HTML report lists them, numbered like the boxes
        areas = browser.find_elements(By.CSS_SELECTOR, "#forgery-regions-list li")
        assert len(areas) == 1 and "cue noise" in areas[0].text
        assert "% of the image" in areas[0].text
        img = browser.find_element(By.ID, "image")
        assert img.get_attribute("src").startswith("data:image/png;base64,")
        assert browser.execute_script("return arguments[0].naturalWidth", img) > 0
        assert len(detector.calls) == 1

        shot = tmp_path / "service_page.png"
        assert browser.save_screenshot(str(shot))

        # the two downloads: the HTML case report and the DICOM results (SR + SEG)
        for what, done in (("report", "Report downloaded."),
                           ("dicom", "DICOM results downloaded")):
            browser.find_element(By.ID, f"{what}-btn").click()
            for _ in range(600):
                note = browser.find_element(By.ID, f"{what}-note").text
                if note and not note.startswith("Writing"):
                    break
                time.sleep(0.1)
            assert note.startswith(done), note
            link = browser.find_element(By.ID, f"{what}-link")
            assert link.get_attribute("href").startswith("blob:")

        # A bad file: the page shows the reader's reason, and the service did not fail.
        browser.find_element(By.ID, "file").send_keys(str(text_file))
        assert _wait_state(browser, ("done", "error")) == "error"
        err = browser.find_element(By.ID, "error")
        assert err.is_displayed() and "not-an-image-file" in err.text
        browser.save_screenshot(str(tmp_path / "service_page_error.png"))
    assert list((tmp_path / "uploads").iterdir()) == []

    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[0] >= 600 and pixels.shape[1] >= 800
    assert pixels.std() > 10  # not a blank page
    print(f"screenshot: {shot}")


def test_page_with_token_and_no_forgery_model(browser, service_archive: ServiceArchive,  # noqa: F811
                                              tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    from medforensics.service.app import create_app
    from medforensics.service.server import BackgroundServer

    dicom = next(Path(r["path"]) for r in service_archive.rows if r.get("split") == "test")
    app = create_app(service_archive.run, token="open-sesame")
    with BackgroundServer(app) as srv:
        browser.get(srv.url + "/")
        assert _wait_state(browser, ("ready", "offline"), 30) == "ready"
        token = browser.find_element(By.ID, "token")
        assert token.is_displayed()
        assert "forgery model not loaded" in browser.find_element(By.ID, "status").text
        # without the token: the page shows the 401 reason
        browser.find_element(By.ID, "file").send_keys(str(dicom))
        assert _wait_state(browser, ("done", "error")) == "error"
        assert "unauthorized" in browser.find_element(By.ID, "error").text
        # with it: the verdict, and a note that no forgery model is loaded
        token.send_keys("open-sesame")
        browser.find_element(By.ID, "file").send_keys(str(dicom))
        assert _wait_state(browser, ("done", "error")) == "done"
        assert browser.find_element(By.ID, "verdict").text in VERDICTS_TEXT
        assert not browser.find_element(By.ID, "error").is_displayed()
        note = browser.find_element(By.ID, "forgery-note").text
        assert "No forgery model is loaded" in note
        assert not browser.find_element(By.ID, "overlay-toggle").is_displayed()
        browser.save_screenshot(str(tmp_path / "service_page_token.png"))


def test_page_inconclusive_and_copy_move_direction(browser, service_archive: ServiceArchive,  # noqa: F811
                                                   tmp_path: Path) -> None:
    """With the real detector: an image with nothing to read shows ``inconclusive`` in the
    warning colour with its reason and no ELA number; a symmetric clone lists its pair as
    ``direction undetermined``."""
    import numpy as np
    from selenium.webdriver.common.by import By

    from medforensics.forgery.detector import ForgeryDetector
    from medforensics.io import write_png16
    from medforensics.service.app import create_app
    from medforensics.service.server import BackgroundServer

    flat = tmp_path / "flat.png"
    write_png16(flat, np.full((128, 128), 900, np.uint16))
    rng = np.random.default_rng(3)
    img = np.rint(2000 + rng.normal(0, 30, (256, 256))).astype(np.uint16)
    img[150:214, 140:204] = img[20:84, 20:84]
    clone = tmp_path / "clone.png"
    write_png16(clone, img)
    app = create_app(service_archive.run, ForgeryDetector.from_run(None),
                     tmp_dir=tmp_path / "uploads")
    with BackgroundServer(app) as srv:
        browser.get(srv.url + "/")
        assert _wait_state(browser, ("ready", "offline"), 30) == "ready"
        browser.find_element(By.ID, "file").send_keys(str(flat))
        assert _wait_state(browser, ("done", "error")) == "done"
        v = browser.find_element(By.ID, "forgery-verdict")
        assert v.text == "inconclusive" and "warn" in v.get_attribute("class").split()
        reason = browser.find_element(By.ID, "forgery-reason")
        assert reason.is_displayed() and "nothing to read" in reason.text
        assert browser.find_element(By.ID, "forgery-ela").text == "not run"
        browser.save_screenshot(str(tmp_path / "inconclusive.png"))

        browser.find_element(By.ID, "file").send_keys(str(clone))
        assert _wait_state(browser, ("done", "error")) == "done"
        v = browser.find_element(By.ID, "forgery-verdict")
        assert v.text == "tampered" and "bad" in v.get_attribute("class").split()
        assert not browser.find_element(By.ID, "forgery-reason").is_displayed()
        items = browser.find_elements(By.CSS_SELECTOR, "#forgery-copies-list li")
        assert len(items) == 1 and items[0].get_attribute("data-direction") == "undetermined"
        assert items[0].text.startswith("direction undetermined")
        browser.save_screenshot(str(tmp_path / "clone.png"))
    print(f"screenshots: {tmp_path}")
