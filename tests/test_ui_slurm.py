"""`deltajobs ui` (issue 36) in a real browser, Debian's chromium driven by Selenium through Debian's
chromedriver, against jobs on minidelta: the runs page shows a job reach COMPLETED without a reload;
a run's page shows a curve and a log line within 5 s of the job writing them; Cancel on the page
ends a running job; a sweep's table sorts by its metric; without the token every page and API
answers 403. Screenshots of each page go to the test's directory (docs/ui-*.png are such ones)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from slurmutil import cli, needs_slurm, wait_for_state

pytestmark = [
    needs_slurm,
    pytest.mark.slurm,
    pytest.mark.skipif(importlib.util.find_spec("flask") is None, reason="flask is not installed"),
    pytest.mark.skipif(importlib.util.find_spec("selenium") is None, reason="selenium is not installed"),
]
ACCOUNT = "bgvu-delta-gpu"

WRITER = """\
import os, sys, time
from deltajobs import report
run_dir = os.environ["DELTAJOBS_RUN_DIR"]
for step in (1, 2):
    print(f"early line {step} <b>not bold</b>", flush=True)
    report(step=step, loss=1.0 / step, **{"<img src=x onerror=window.pwned=1>": step})
while not os.path.exists(os.path.join(run_dir, "go")):
    time.sleep(0.1)
report(step=3, loss=0.125)
print("the marker line", flush=True)
open(os.path.join(run_dir, "written"), "w").write(repr(time.time()))
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 2)
"""
SWEEP = """\
import argparse
from deltajobs import report
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float)
args = parser.parse_args()
report(epoch=1, val_acc=args.lr * 10)
"""


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, dict[str, str]]]:
    """`deltajobs ui` on a free port, in this module's own home: (base URL, token, env)."""
    home = tmp_path_factory.mktemp("ui-home")
    env = {**os.environ, "DELTAJOBS_HOME": str(home / "state"), "XDG_CONFIG_HOME": str(home / "config")}
    errors = (home / "ui.err").open("w")  # a file, not a pipe nobody reads (a full pipe would block the server)
    process = subprocess.Popen([sys.executable, "-m", "deltajobs", "ui"], stdout=subprocess.PIPE,
                               stderr=errors, text=True, env=env)  # fmt: skip
    assert process.stdout is not None
    lines = []
    while "serving" not in (line := process.stdout.readline()):
        assert line, process.stderr.read() if process.stderr else ""
        lines.append(line)
    found = re.search(r"open:    (http://127\.0\.0\.1:\d+)/\?token=(\S+)", "".join(lines))
    assert found, lines
    yield found.group(1), found.group(2), env
    process.send_signal(signal.SIGINT)
    process.wait(timeout=30)
    subprocess.run([sys.executable, "-m", "deltajobs", "cancel", "--all", "--yes"], env=env, capture_output=True)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    assert binary and driver_path, "Debian's chromium and chromium-driver: apt-get install chromium chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def submit(env: dict[str, str], cwd: Path, *args: str) -> str:
    done = cli("submit", *args, env=env, cwd=cwd)
    assert done.returncode == 0, done.stderr
    found = re.search(r"^submitted (\d+)", done.stdout, re.M)
    assert found, done.stdout
    return found.group(1)


def wait_until(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def shot(driver, tmp_path: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / f"ui-{name}.png"
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 5000


def test_runs_page_shows_a_job_reach_completed_without_a_reload(ui, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base, token, env = ui
    (tmp_path / "writer.py").write_text(WRITER)
    browser.get(f"{base}/?token={token}")
    browser.execute_script("window.notReloaded = true;")
    job = submit(env, tmp_path, "writer.py", "-A", ACCOUNT, "-t", "00:05:00", "--", "1")

    def text(selector: str) -> str:  # in one script: the table is redrawn every 2 s under Selenium's feet
        return browser.execute_script(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';", selector
        )

    def state() -> str:
        return text(f'#runs tr[data-job="{job}"] td.state')

    wait_until(lambda: state().startswith(("PENDING", "RUNNING")), 30, "the new job listed")
    (Path(json.loads(cli("status", job, "--json", env=env).stdout)[0]["run_dir"]) / "go").touch()
    wait_until(lambda: state() == "COMPLETED", 90, f"job {job} COMPLETED on the page; saw {state()!r}")
    assert browser.execute_script("return window.notReloaded === true;")
    row = text(f'#runs tr[data-job="{job}"]')
    assert "writer" in row and "script" in row and "gpuA100x4" in row
    shot(browser, tmp_path, "runs")


def test_run_page_shows_a_curve_and_a_log_line_within_5_s(ui, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    base, token, env = ui
    (tmp_path / "writer.py").write_text(WRITER)
    job = submit(env, tmp_path, "writer.py", "-A", ACCOUNT, "-t", "00:05:00", "--", "20")
    wait_for_state(job, {"RUNNING"}, env=env)
    run_dir = Path(json.loads(cli("status", job, "--json", env=env).stdout)[0]["run_dir"])
    browser.get(f"{base}/run/{job}?token={token}")
    log = lambda: browser.find_element(By.ID, "log").text  # noqa: E731
    wait_until(lambda: "early line 2" in log(), 30, "the early lines")
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#chart canvas"), 15, "a chart of the first reports")
    (run_dir / "go").touch()
    wait_until(lambda: (run_dir / "written").exists(), 30, "the job writing")
    written = float((run_dir / "written").read_text())
    wait_until(lambda: "the marker line" in log(), 10, "the marker line on the page")
    seen_log = time.time()
    points = lambda: browser.find_element(By.ID, "chart").get_attribute("data-points")  # noqa: E731
    wait_until(lambda: points() == "3", 10, "the third report on the chart")
    seen_curve = time.time()
    assert set(browser.find_element(By.ID, "keys").text.split(", ")) == {"loss", "<img src=x onerror=window.pwned=1>"}
    assert "early line 1 <b>not bold</b>" in log()
    assert seen_log - written < 5.0, f"{seen_log - written:.1f} s from the job's line to the page"
    assert seen_curve - written < 5.0, f"{seen_curve - written:.1f} s from the job's report to the chart"
    shot(browser, tmp_path, "run")
    browser.find_element(By.ID, "cancel").click()  # the next test's subject, here on a job of our own
    browser.switch_to.alert.dismiss()  # asked first: dismissed, nothing is sent
    time.sleep(6)  # past the server's 5 s view of the state
    assert browser.find_element(By.ID, "action-result").text == ""
    assert json.loads(cli("status", job, "--json", env=env).stdout)[0]["state"] == "RUNNING"
    assert browser.execute_script("return window.pwned === undefined;")  # a metric key is text, not HTML
    assert "token=" not in browser.current_url  # out of the address bar once the cookie is set


def test_cancel_on_the_page_ends_a_running_job(ui, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    base, token, env = ui
    (tmp_path / "writer.py").write_text(WRITER)
    job = submit(env, tmp_path, "writer.py", "-A", ACCOUNT, "-t", "00:05:00")
    wait_for_state(job, {"RUNNING"}, env=env)
    browser.get(f"{base}/run/{job}?token={token}")
    wait_until(lambda: browser.find_element(By.ID, "state").text == "RUNNING", 15, "RUNNING on the page")
    browser.find_element(By.ID, "cancel").click()
    browser.switch_to.alert.accept()
    wait_until(lambda: browser.find_element(By.ID, "action-result").text == "cancelled", 30, "cancelled")
    assert wait_for_state(job, {"CANCELLED"}, timeout=60, env=env)["state"] == "CANCELLED"
    forged = urllib.request.Request(f"{base}/api/run/{job}/cancel?token={token}", method="POST", data=b"")
    with pytest.raises(urllib.error.HTTPError) as refused:  # no CSRF token: refused
        urllib.request.urlopen(forged, timeout=30)
    assert refused.value.code == 403


def test_a_sweeps_table_sorts_by_its_metric(ui, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    base, token, env = ui
    (tmp_path / "sweep.py").write_text(SWEEP)
    done = cli("sweep", "sweep.py", "--grid", "lr=0.2,0.05,0.1", "-A", ACCOUNT, "-t", "00:05:00", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    sweep_id = re.search(r"submitted sweep (sw-\w+)", done.stdout).group(1)  # type: ignore[union-attr]
    deadline = time.time() + 180
    while True:
        view = json.loads(cli("sweep", "status", sweep_id, "--json", env=env).stdout)
        states = [p["state"] for p in view["points"]]
        if all(state == "COMPLETED" for state in states):
            break
        assert time.time() < deadline, f"sweep {sweep_id} not COMPLETED in 180 s: {states}"
        time.sleep(2)
    browser.get(f"{base}/sweeps?token={token}")  # the list, then the sweep by its link
    listed = browser.find_element(By.ID, "sweeps").text
    assert sweep_id in listed and "3 COMPLETED" in listed and "sweep" in listed
    browser.find_element(By.LINK_TEXT, sweep_id).click()
    header = browser.find_element(By.CSS_SELECTOR, '#points th[data-metric="val_acc"]')
    assert browser.find_element(By.ID, "history").get_attribute("data-points") == "3"  # by point, best so far
    column = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#points thead th")].index("val_acc")

    def scores() -> list[float]:
        rows = browser.find_elements(By.CSS_SELECTOR, "#points tbody tr")
        return [float(r.find_elements(By.TAG_NAME, "td")[column].text) for r in rows]

    header.click()
    assert scores() == [0.5, 1.0, 2.0]
    header.click()
    assert scores() == [2.0, 1.0, 0.5]
    best = browser.find_element(By.CSS_SELECTOR, "#points tr.best").find_elements(By.TAG_NAME, "td")[column].text
    assert float(best) == 2.0  # the best point by the sweep's metric, highlighted
    shot(browser, tmp_path, "sweep")


def test_without_the_token_every_page_and_api_is_403(ui) -> None:  # type: ignore[no-untyped-def]
    base, token, env = ui
    paths = ["/", "/spend", "/run/1", "/sweep/sw-1", "/compare?ids=1,2", "/api/runs", "/api/run/1",
             "/api/run/1/log", "/api/run/1/curves", "/api/spend", "/static/ui.js", "/nonexistent"]  # fmt: skip
    for path in paths:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + path, timeout=30)
        assert refused.value.code == 403, path
        assert b"opens only with its token" in refused.value.read()
    for path in ("/api/run/1/cancel", "/api/run/1/resume"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(base + path, method="POST", data=b""), timeout=30)
        assert refused.value.code == 403, path
    with urllib.request.urlopen(f"{base}/api/runs?token={token}", timeout=30) as reply:
        assert reply.status == 200 and "rows" in json.loads(reply.read())


def test_spend_and_compare_pages(ui, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """After the jobs above: their SU per day under their account, and two of them side by side."""
    from selenium.webdriver.common.by import By

    base, token, env = ui
    browser.get(f"{base}/spend?token={token}")
    per_day = browser.find_element(By.ID, "per-day").text
    assert ACCOUNT in per_day and time.strftime("%Y-%m-%d") in per_day
    assert ACCOUNT in browser.find_element(By.ID, "balances").text  # minidelta: SLURM's limits
    assert browser.find_elements(By.CSS_SELECTOR, "#dearest tbody tr")
    shot(browser, tmp_path, "spend")
    with urllib.request.urlopen(f"{base}/api/runs?token={token}&q=writer", timeout=30) as reply:
        ids = [r["job_id"] for r in json.loads(reply.read())["rows"]][:2]
    assert len(ids) == 2
    browser.get(f"{base}/compare?ids={','.join(ids)}&token={token}")
    differs = [tr.text for tr in browser.find_elements(By.CSS_SELECTOR, "#diff tr.differs")]
    assert any(line.startswith("run.args") for line in differs), differs  # "--", "20" against none
    assert int(browser.find_element(By.ID, "chart").get_attribute("data-points") or 0) >= 2
    shot(browser, tmp_path, "compare")
