"""`pisar flower` shows Pisar's workers and finished run_shard tasks (task events are on), behind basic auth."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from infra.local_services import free_port, port_open, wait_for
from tests.helpers.cli import PISAR, run_pisar, wait_until
from tests.helpers.flower import fetch, fetch_json
from tests.helpers.paths import BUILD
from tests.helpers.s3 import upload

pytestmark = pytest.mark.slow

CREDENTIALS = "archivist:correct horse battery"


def get(url: str, credentials: str | None = CREDENTIALS) -> tuple[int, bytes]:
    return fetch(url, credentials)


def get_json(url: str) -> object:
    return fetch_json(url, CREDENTIALS)


def test_flower_shows_worker_and_tasks(s3, distributed_env, start_worker, tiny_model: Path, print_lines: Path, tmp_path: Path) -> None:
    port = free_port()
    # Flower hears every task event of its broker's Redis database (kombu prefixes fanout channels
    # with it), and the tests running beside this one use database 0: this one gets its own.
    alone = {**distributed_env, "PISAR_REDIS_URL": urlsplit(distributed_env["PISAR_REDIS_URL"])._replace(path="/9").geturl()}
    env = {**alone, "PISAR_FLOWER_BASIC_AUTH": CREDENTIALS}
    flower = subprocess.Popen(
        [PISAR, "flower", f"--port={port}"], env=env, stdout=(tmp_path / "flower.log").open("w"), stderr=subprocess.STDOUT
    )
    try:
        wait_for(lambda: port_open(port), "flower", 60, flower)
        start_worker(alone, "seen")
        s3.create_bucket(Bucket="flower")
        upload(s3, "flower", {f"v/{p.name}": p.read_bytes() for p in sorted(print_lines.glob("*.png"))[:6]})
        submitted = run_pisar(["submit", "s3://flower/v", "--model", str(tiny_model), "--name", "flower", "--shard-size", "3"], env)
        assert submitted.returncode == 0, submitted.stderr
        base = f"http://127.0.0.1:{port}"

        def tasks_succeeded() -> bool:
            tasks = get_json(f"{base}/api/tasks")
            # The producer's task-sent event may reach Flower after the worker's events: wait for both.
            done = [t for t in tasks.values() if t.get("name") == "pisar.run_shard" and t.get("state") == "SUCCESS"]
            return len(done) == 2 and all(t.get("worker") for t in done)

        wait_until(tasks_succeeded, 120, "Flower to show two successful run_shard tasks")
        tasks = get_json(f"{base}/api/tasks")
        assert all(t["worker"].startswith("seen@") for t in tasks.values())
        # Messages carry ids only; Flower shows what they mean (argsrepr).
        assert sorted(t["args"] for t in tasks.values()) == ["campaign 'flower' shard 0 (3 lines)", "campaign 'flower' shard 1 (3 lines)"]
        wait_until(lambda: any(name.startswith("seen@") for name in get_json(f"{base}/api/workers?refresh=1")), 60, "the worker in Flower")

        # Every page, the API and /metrics (open in plain Flower) want the password; /healthcheck does not.
        for path in ("/", "/tasks", "/api/tasks", "/api/workers", "/metrics"):
            assert get(base + path, credentials=None)[0] == 401, path
            assert get(base + path, credentials="archivist:wrong")[0] == 401, path
        status, metrics = get(base + "/metrics")
        assert status == 200 and b"flower_events_total" in metrics
        assert get(base + "/healthcheck", credentials=None) == (200, b"OK")
        seen_in_chromium(base, tmp_path)
    finally:
        flower.terminate()
        flower.wait(timeout=20)
    log = (tmp_path / "flower.log").read_text(encoding="utf-8")
    assert "with basic auth" in log and "correct horse" not in log  # the password is never logged


def seen_in_chromium(base: str, tmp_path: Path) -> None:
    """What an operator sees: log in, then the worker on the dashboard and the finished tasks on /tasks.

    Headless Debian Chromium driven by Selenium; screenshots go to build/screenshots/ (copies in docs/).
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    shots = BUILD / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    try:
        driver.get(base + "/")
        assert "seen@" not in driver.page_source and "pisar" not in driver.title.lower(), "nothing shown before logging in"
        # Log in: basic auth as a browser sends it once the operator has typed the password.
        driver.execute_cdp_cmd("Network.enable", {})
        token = base64.b64encode(CREDENTIALS.encode()).decode()
        driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})
        driver.get(base + "/")
        WebDriverWait(driver, 30).until(lambda d: "seen@" in d.find_element(By.TAG_NAME, "body").text)
        driver.save_screenshot(str(shots / "flower-workers.png"))
        driver.get(base + "/tasks")
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").text.count("pisar.run_shard") >= 2)
        assert driver.find_element(By.TAG_NAME, "body").text.count("SUCCESS") == 2
        driver.save_screenshot(str(shots / "flower-tasks.png"))
        driver.find_element(By.CSS_SELECTOR, "a[href*='/task/']").click()  # one task: its arguments say what it is
        WebDriverWait(driver, 30).until(lambda d: "campaign 'flower' shard" in d.find_element(By.TAG_NAME, "body").text)
        assert "(3 lines)" in driver.find_element(By.TAG_NAME, "body").text
        driver.save_screenshot(str(shots / "flower-task.png"))
    finally:
        driver.quit()
