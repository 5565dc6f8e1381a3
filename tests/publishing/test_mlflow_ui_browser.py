"""What a reviewer sees, read through a real browser: the MLflow UI, served on loopback over the store the publish
stage wrote, shows the registered model's version with its aliases, links that version to its source run (the
publish stage's run), and that run's page shows the lineage tags (code version, where the release went).

Headless Chromium from the system packages (Debian ``chromium`` and ``chromium-driver``) driven by Selenium; the
test skips, naming the packages, where they are missing (``make test-slow`` installs them when run as root).
The UI is a single-page app that renders after its own API calls: every check waits for its element explicitly.
Screenshots of the three pages are kept under the test's tmp folder, whose path the test prints.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pytest

pytestmark = pytest.mark.slow

APT_PACKAGES = "chromium chromium-driver"
# The app loads a few MB of JavaScript and then queries the server; on the shared 2-core machine with the
# server starting beside it this takes seconds, so the waits are generous (they return as soon as it shows).
UI_TIMEOUT_S = 90
SERVER_START_TIMEOUT_S = 180
# Flags from the issue: no GPU, no sandbox (root in a container), and nothing that would reach for the network,
# which this machine does not have (component updates, sync, first-run pages).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1000",
)


def _chromium_binaries() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        missing = " and ".join(name for name, path in (("chromium", browser), ("chromedriver", driver)) if not path)
        pytest.skip(f"{missing} not found: install the Debian packages with `apt-get install -y {APT_PACKAGES}`")
    return browser, driver


@pytest.fixture
def chrome(tmp_path_factory):
    """A headless Chromium session with a fresh profile. Requested before the store is built, so a machine
    without the browser skips at once instead of publishing a release first."""
    pytest.importorskip("selenium", reason="selenium is in the dev extra: pip install -e '.[dev]'")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = _chromium_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    # An explicit driver path keeps Selenium Manager (which would try to download a driver) out of it.
    session = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    try:
        yield session
    finally:
        session.quit()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@pytest.fixture
def mlflow_ui(published_release, tmp_path):
    """``mlflow server`` on a free loopback port over the test's store; yields its base URL."""
    store = published_release.cfg.lineage.tracking_uri
    port = _free_port()
    log_path = tmp_path / "mlflow_server.log"
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow_cli), "server", "--backend-store-uri", store, "--host", "127.0.0.1", "--port", str(port)]
    # One worker: the machine has two shared cores and the browser needs one of them.
    command += ["--workers", "1"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    # The server otherwise forks six job-runner processes (GenAI scorers and judges) that these pages never use.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    with open(log_path, "wb") as log:
        # Its own process group, so the server and the workers it forks are stopped together.
        server = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env=env, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not _answers(f"{base}/health"):
            if server.poll() is not None or time.monotonic() > deadline:
                state = f"exited with {server.returncode}" if server.poll() is not None else "did not answer"
                pytest.fail(f"mlflow server {state} on {base}; its log:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.5)  # polling the health endpoint, not waiting on the UI
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _close_assistant_panel(driver) -> None:
    """MLflow 3.17 opens an "MLflow Assistant" chat panel over a third of the window; close it so the screenshots
    show the page itself. Other versions may not have it, which is fine."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    close = (By.CSS_SELECTOR, 'button[data-component-id="mlflow.assistant.chat_panel.close"]')
    for button in driver.find_elements(*close):
        if button.is_displayed():
            button.click()
            WebDriverWait(driver, UI_TIMEOUT_S).until(ec.invisibility_of_element_located(close))


def test_the_ui_shows_the_champion_version_linked_to_its_run_with_the_lineage_tags(
    chrome, published_release, mlflow_ui, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    cfg, run_id = published_release.cfg, published_release.report["mlflow_run_id"]
    client = mlflow.MlflowClient(tracking_uri=cfg.lineage.tracking_uri)
    name = cfg.lineage.registered_model
    run = client.get_run(run_id)
    version = run.data.tags["publish.model_version"]
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"\nMLflow UI screenshots: {shots}")
    wait = WebDriverWait(chrome, UI_TIMEOUT_S)

    def tag_value(key: str) -> str:
        """A run tag as the run page shows it: a visible chip titled with the key, holding a key span and a
        ": <value>" span. Long values are cut with an ellipsis on screen; the value span's title holds it whole."""
        chip = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, f'[role="status"][title="{key}"]')))
        key_span, value_span = chip.find_elements(By.CSS_SELECTOR, "span[title]")[-2:]
        assert key_span.get_attribute("title") == key and value_span.text.startswith(":")
        return value_span.get_attribute("title")

    # The registered model's page: the version is listed with both aliases in its row.
    chrome.get(f"{mlflow_ui}/#/models/{name}")
    version_link = wait.until(
        ec.element_to_be_clickable((By.CSS_SELECTOR, f'a[href$="#/models/{name}/versions/{version}"]'))
    )
    row = version_link.find_element(By.XPATH, "./ancestor::*[@role='row'][1]")
    for alias in ("candidate", "champion"):
        assert row.find_element(By.CSS_SELECTOR, f'[role="status"][title="{alias}"]').text.endswith(alias)
    _close_assistant_panel(chrome)
    chrome.save_screenshot(str(shots / "1_registered_model.png"))

    # The version's page, reached by following the link as a reviewer would: aliases and the source run link.
    version_link.click()
    run_link = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, f'a[href*="/runs/{run_id}"]')))
    assert run_link.text == run.info.run_name == "publish"
    assert f"/experiments/{run.info.experiment_id}/runs/{run_id}" in run_link.get_attribute("href")
    champion = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, '[role="status"][title="champion"]')))
    assert champion.text.endswith("champion")
    _close_assistant_panel(chrome)
    chrome.save_screenshot(str(shots / "2_model_version.png"))

    # The source run's page: the lineage tags, with the values the store holds.
    run_link.click()
    wait.until(ec.url_contains(f"/runs/{run_id}"))
    expected = {
        key: run.data.tags[key]
        for key in (
            "git_sha",
            "git_dirty",
            "ling26.stage",
            "publish.model_version",
            "publish.weights_sha256",
            "publish.hub_revision",
            "publish.hub_location",
        )
    }
    assert expected["ling26.stage"] == "publish" and len(expected["git_sha"]) == 40
    shown = {key: tag_value(key) for key in expected}
    assert shown == expected
    # And the run links back to the version it was registered as, closing the loop a reviewer walks.
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, f'a[href$="#/models/{name}/versions/{version}"]')))
    _close_assistant_panel(chrome)
    tags_heading = chrome.find_element(By.XPATH, "//h4[normalize-space()='Tags']")
    chrome.execute_script("arguments[0].scrollIntoView({block: 'center'})", tags_heading)
    chrome.save_screenshot(str(shots / "3_source_run.png"))
    assert all((shots / f).stat().st_size > 10_000 for f in os.listdir(shots))
