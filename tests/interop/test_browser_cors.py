"""The CORS consent flow in a real browser: headless Chromium runs a page of another origin
that calls caucased, follows the consent page, and retries."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.servers import OUR_BIN, RunningServer, start_caucased

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
TIMEOUT = 30

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>app</title></head>
<body><div id="result">pending</div>
<script>
const target = "%(target)s";
async function run() {
  const response = await fetch(target, {credentials: "include"});
  const header = response.headers.get("WWW-Authenticate") || "";
  if (response.status === 401 && header.startsWith("cors url=")
      && !sessionStorage.getItem("asked")) {
    sessionStorage.setItem("asked", "1");
    const template = decodeURIComponent(header.slice("cors url=".length));
    location.href = template.replace(
      "{&return}", "&return=" + encodeURIComponent(location.href));
    return;
  }
  const text = await response.text();
  document.getElementById("result").textContent =
    "done " + response.status + " " + text.split("\\n")[0];
}
run().catch(error => {
  document.getElementById("result").textContent = "done error " + error;
});
</script></body></html>
"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def caucased(tmp_path: Path) -> Iterator[RunningServer]:
    server = start_caucased([OUR_BIN / "caucased"], tmp_path / "ca")
    yield server
    server.stop()


@pytest.fixture
def app_origins(caucased: RunningServer, tmp_path: Path) -> Iterator[list[str]]:
    """Two web applications on other origins (other ports) whose page calls caucased."""
    root = tmp_path / "app"
    root.mkdir()
    target = f"{caucased.http_url}/cas/crt/ca.crt.pem"
    (root / "index.html").write_text(PAGE % {"target": target})
    handler = functools.partial(_QuietHandler, directory=str(root))
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) for _ in range(2)]
    threads = [threading.Thread(target=server.serve_forever, daemon=True) for server in servers]
    for thread in threads:
        thread.start()
    yield [f"http://127.0.0.1:{server.server_address[1]}" for server in servers]
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--ignore-certificate-errors",  # caucased's own HTTPS CA is not in the browser's store
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def consent(browser: webdriver.Chrome, app: str, caucased: RunningServer, grant: bool) -> str:
    """Open the app, answer the consent page, return what the app finally displays."""
    browser.get(app + "/index.html")
    consent_prefix = f"https://127.0.0.1:{caucased.https_port}/cors"
    WebDriverWait(browser, TIMEOUT).until(lambda d: d.current_url.startswith(consent_prefix))
    assert app in browser.page_source  # the page names the origin asking for access
    value = "1" if grant else "0"
    browser.find_element(By.CSS_SELECTOR, f'button[name="grant"][value="{value}"]').click()
    WebDriverWait(browser, TIMEOUT).until(
        lambda d: (
            d.current_url.startswith(app)
            and d.find_element(By.ID, "result").text.startswith("done")
        )
    )
    return str(browser.find_element(By.ID, "result").text)


def test_granted_origin_reads_and_denied_origin_is_refused(
    browser: webdriver.Chrome, app_origins: list[str], caucased: RunningServer
) -> None:
    granted, denied = app_origins
    assert consent(browser, granted, caucased, grant=True) == (
        "done 200 -----BEGIN CERTIFICATE-----"
    )
    assert consent(browser, denied, caucased, grant=False) == "done 403"
    # The grant is remembered: a new visit reads at once, without the consent page.
    browser.get(granted + "/index.html")
    WebDriverWait(browser, TIMEOUT).until(
        lambda d: d.find_element(By.ID, "result").text.startswith("done")
    )
    assert browser.current_url.startswith(granted)
    assert browser.find_element(By.ID, "result").text == "done 200 -----BEGIN CERTIFICATE-----"
