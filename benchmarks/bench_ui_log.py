"""Issue 36: the delay from a line a job writes to its log to the line shown in the browser, on the
run's page of `deltajobs ui`, on an idle minidelta.

A job prints a line stamped with the time it was written, every 2 s, N times; headless chromium
(Selenium, Debian's chromedriver) has the run's page open, where a MutationObserver notes when each
line appears (the same machine's clock). The page polls the log every second, so the delay is
about half a second plus the request, on average, and under about 1.2 s at worst.

    scripts/minidelta up
    python benchmarks/bench_ui_log.py [--lines 15]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import cpu_model

ACCOUNT = "bgvu-delta-gpu"
JOB = """\
import sys, time
for i in range(int(sys.argv[1])):
    time.sleep(2)
    print(f"line {i} written {time.time():.3f}", flush=True)
time.sleep(3)
"""
OBSERVE = """
window.seen = {};
new MutationObserver(() => {
  for (const m of document.getElementById("log").textContent.matchAll(/line (\\d+) written ([\\d.]+)/g)) {
    if (!(m[1] in window.seen)) window.seen[m[1]] = [Number(m[2]), Date.now() / 1000];
  }
}).observe(document.getElementById("log"), {childList: true, characterData: true, subtree: true});
"""


def main() -> int:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=15)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    env = {**os.environ, "DELTAJOBS_HOME": str(home / "state"), "XDG_CONFIG_HOME": str(home / "config")}
    (home / "job.py").write_text(JOB)
    ui = subprocess.Popen([sys.executable, "-m", "deltajobs", "ui"], stdout=subprocess.PIPE, text=True, env=env)
    assert ui.stdout is not None
    head = "".join(ui.stdout.readline() for _ in range(2))
    url = re.search(r"open:    (http://\S+)/\?token=(\S+)", head)
    assert url, head
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--user-data-dir={home / 'chromium'}"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=options)
    try:
        argv = [sys.executable, "-m", "deltajobs", "submit", "job.py", "-A", ACCOUNT, "-t", "00:10:00", "--",
                str(args.lines)]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=home, check=True)
        job = re.search(r"^submitted (\d+)", done.stdout, re.M).group(1)  # type: ignore[union-attr]
        driver.get(f"{url.group(1)}/run/{job}?token={url.group(2)}")
        driver.execute_script(OBSERVE)
        deadline = time.time() + 60 + 3 * args.lines
        while time.time() < deadline and len(driver.execute_script("return window.seen;") or {}) < args.lines:
            time.sleep(0.5)
        seen = driver.execute_script("return window.seen;")
    finally:
        driver.quit()
        ui.send_signal(signal.SIGINT)
        ui.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)
    first = min(int(k) for k in seen)  # a line already there when the page opened is not a delay
    delays = sorted(shown - written for k, (written, shown) in seen.items() if int(k) > first)
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; {len(delays)} lines, one every 2 s")
    print(f"log line written -> shown in the browser: median {statistics.median(delays):.2f} s, "
          f"max {max(delays):.2f} s, min {min(delays):.2f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
