"""Operations, seen working: a real `prefect server` on 127.0.0.1, the pipeline flow run
against it on the micro configuration, its flow-run page loaded in headless Chromium (the run,
its stage tasks and its artifacts — the gate tables and the benchmark — on the rendered page,
a screenshot saved), and `flows/pipeline.py serve --cron ...` registering its deployment with
the schedule and executing a run triggered through the API.

Both flow runs work on copies of the session's micro-pipeline run (tests/e2e/conftest.py), so
DVC finds every stage up to date and the flow runs in about a minute: every stage is still a
Prefect task of the run, and the artifacts are published from the stages' outputs as usual.

Screenshots go to $DISTILLERY_TEST_ARTIFACTS (CI sets it; .ci/run says where), else to the
test's temporary directory. The UI test skips only when Chromium or chromedriver is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from flows.pipeline import stage_order, task_runs_of_a_run
from tests.e2e.conftest import PIPELINE_TIMEOUT

pytestmark = pytest.mark.slow

FLOW = "distillery-pipeline"
CRON = "0 3 * * *"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1600,2000"]
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
RETRIES_ON_503 = 6     # 0.5 s doubling: about 30 s in all, as long as one request may take


def chromium() -> tuple[str, str] | None:
    """(browser, chromedriver) when both are installed."""
    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver") or next(
        (p for p in ("/usr/lib/chromium/chromedriver", "/usr/bin/chromedriver") if os.path.exists(p)), None)
    return (browser, driver) if browser and driver else None


def artifacts_dir(tmp_path: Path) -> Path:
    d = Path(os.environ.get("DISTILLERY_TEST_ARTIFACTS") or tmp_path / "artifacts")
    d.mkdir(parents=True, exist_ok=True)
    return d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def until(what: str, fn: Callable[[], Any], timeout: float, every: float = 1.0,
          why: Callable[[], str] = str) -> Any:
    """Poll `fn` until it returns something truthy; fail saying what never happened."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s\n{why()}")
        time.sleep(every)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process this module started, and its children (its own session)."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGINT, 30), (signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass(frozen=True)
class Server:
    url: str                 # http://127.0.0.1:PORT (the UI)
    env: dict[str, str]      # what a client process needs to report to it
    log: Path

    @property
    def api(self) -> str:
        return self.url + "/api"

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._send("POST", path, json=body or {})

    def get(self, path: str) -> Any:
        return self._send("GET", path)

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        # The server answers 503 when its SQLite file is busy (a flow run writing beside us); the
        # transaction was rolled back, so Prefect's own client retries it, and so do we.
        for attempt in range(RETRIES_ON_503):
            r = httpx.request(method, f"{self.api}/{path}", timeout=30, **kwargs)
            if r.status_code != 503:
                break
            time.sleep(0.5 * 2 ** attempt)
        r.raise_for_status()
        return r.json()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`prefect server start` on a free port of 127.0.0.1, its own home and database."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
                "PREFECT_UI_API_URL": f"{url}/api", "PREFECT_LOGGING_LEVEL": "WARNING",
                "PREFECT_LOGGING_TO_API_ENABLED": "true"}
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    log = home / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                 "--port", str(port)], env={**base, **settings}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(url, {**base, **settings, "PREFECT_API_URL": f"{url}/api"}, log)

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"prefect server exited with {proc.returncode}:\n{server.tail()}")
        try:
            return httpx.get(f"{server.api}/health", timeout=5).json() is True
        except httpx.HTTPError:
            return False

    try:
        until("prefect server healthy", healthy, timeout=180, why=server.tail)
        yield server
    finally:
        stop(proc)


def flow_runs(server: Server) -> list[dict[str, Any]]:
    return server.post("flow_runs/filter", {"flows": {"name": {"any_": [FLOW]}}})


def task_run_names(server: Server, flow_run_id: str) -> list[str]:
    runs = server.post("task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200})
    return sorted(r["name"] for r in runs)


def recorded_task_runs(server: Server, flow_run_id: str, n_stages: int) -> list[str]:
    """The flow run's task run names once all are recorded: they reach the server as events,
    a moment after the flow run's own final state."""
    expected = task_runs_of_a_run(n_stages)

    def all_task_runs() -> list[str] | None:
        names = task_run_names(server, flow_run_id)
        return names if len(names) == expected else None

    return until("every task run recorded", all_task_runs, timeout=120,
                 why=lambda: str(task_run_names(server, flow_run_id)))


def artifacts_of(server: Server, flow_run_id: str) -> dict[str, dict[str, Any]]:
    arts = server.post("artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})
    return {a["key"]: a for a in arts if a["key"]}


# ---------------------------------------------------------------------------------------
# The UI in a browser
# ---------------------------------------------------------------------------------------


class Browser:
    def __init__(self, binaries: tuple[str, str], profile: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service

        opts = Options()
        opts.binary_location = binaries[0]
        for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
            opts.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service(binaries[1]), options=opts)

    def text(self) -> str:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.TAG_NAME, "body").text

    def wait_for(self, what: str, needles: list[str], timeout: float = 120) -> str:
        """The page's text once every needle is on it (the UI renders asynchronously)."""
        def shown() -> str:
            text = self.text()
            return text if all(n in text for n in needles) else ""

        return until(f"{what}: {needles} on the rendered page", shown, timeout=timeout,
                     why=lambda: self.text()[-3000:])

    def click_tab(self, name: str) -> None:
        from selenium.webdriver.common.by import By

        until(f"tab {name!r}", lambda: self.driver.find_elements(
            By.XPATH, f"//li[contains(@class, 'p-tab') and normalize-space()='{name}']"), timeout=60)[0].click()

    def screenshot(self, path: Path) -> Path:
        self.driver.save_screenshot(str(path))
        return path

    def close(self) -> None:
        self.driver.quit()


@pytest.mark.timeout(PIPELINE_TIMEOUT + 1200)
def test_the_ui_shows_the_pipeline_run_its_stage_tasks_and_artifacts(prefect_server, micro_copy, tmp_path,
                                                                     monkeypatch):
    binaries = chromium()
    if binaries is None:
        pytest.skip("Chromium and chromedriver are not installed (Debian: apt-get install -y chromium "
                    "chromium-driver; .ci/run installs them)")
    monkeypatch.setenv("SE_OFFLINE", "true")     # Selenium Manager: never download a driver
    repo = micro_copy("ui")
    before = {r["id"] for r in flow_runs(prefect_server)}
    p = subprocess.run([sys.executable, "flows/pipeline.py", "run", "--repo", str(repo)], cwd=repo,
                       env=prefect_server.env, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stderr[-3000:]
    (run,) = [r for r in flow_runs(prefect_server) if r["id"] not in before]
    assert run["state_type"] == "COMPLETED"
    n_stages = len(stage_order(repo))
    tasks = recorded_task_runs(prefect_server, run["id"], n_stages)
    arts = artifacts_of(prefect_server, run["id"])
    stage_tasks = [t for t in tasks if t.startswith("repro_stage-")]
    assert n_stages >= 15 and len(stage_tasks) == n_stages
    gates = sorted(k for k in arts if k.startswith("gate-"))
    assert {"gate-tasks-tasks", "gate-collect-oracle-episodes", "gate-collect-random-steps"} <= set(gates)
    assert {"benchmark", "benchmark-summary", "pipeline-stages"} <= set(arts)

    shots = artifacts_dir(tmp_path)
    browser = Browser(binaries, Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path)))
    try:
        browser.driver.get(f"{prefect_server.url}/runs/flow-run/{run['id']}")
        browser.wait_for("the flow run", [run["name"], "Completed", FLOW, f"{len(tasks)} Task runs"])
        browser.click_tab("Task Runs")
        browser.wait_for("its stage tasks", ["repro_stage-", "publish_gates-", "publish_benchmark-"])
        browser.click_tab("Artifacts")
        page = browser.wait_for("its artifacts", ["Flow run", "Task runs", *sorted(arts)])
        assert "Gate tasks on data/tasks/tasks.parquet: passed" in page
        browser.screenshot(shots / "prefect-ui-flow-run.png")

        # The tables themselves, each on its artifact page: the benchmark's policies, a gate's checks.
        browser.driver.get(f"{prefect_server.url}/artifacts/artifact/{arts['benchmark']['id']}")
        browser.wait_for("the benchmark table", ["benchmark", "oracle", "random", "success_rate", "all"])
        browser.screenshot(shots / "prefect-ui-benchmark.png")
        browser.driver.get(f"{prefect_server.url}/artifacts/artifact/{arts['gate-collect-oracle-episodes']['id']}")
        browser.wait_for("a gate table", ["expect_column_values_to_be_unique", "_success_iff_mode_none",
                                          "unexpected_count"])
    except BaseException:
        browser.screenshot(shots / "prefect-ui-failure.png")
        raise
    finally:
        browser.close()
    print(f"screenshots in {shots}")


# ---------------------------------------------------------------------------------------
# The scheduled deployment
# ---------------------------------------------------------------------------------------


@pytest.mark.timeout(PIPELINE_TIMEOUT + 1200)
def test_the_served_deployment_has_its_schedule_and_a_triggered_run_executes(prefect_server, micro_copy,
                                                                            tmp_path):
    repo = micro_copy("deploy")
    log = tmp_path / "serve.log"
    env = {**prefect_server.env, "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "flows/pipeline.py", "serve", "--repo", str(repo),
                                 "--cron", CRON, "--name", "nightly-test"], cwd=repo, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def serving_log() -> str:
        return log.read_text(errors="replace")[-3000:]

    try:
        def deployment() -> dict[str, Any] | None:
            if proc.poll() is not None:
                raise AssertionError(f"flows/pipeline.py serve exited with {proc.returncode}:\n{serving_log()}")
            found = prefect_server.post("deployments/filter", {"deployments": {"name": {"any_": ["nightly-test"]}}})
            return found[0] if found else None

        dep = until("the deployment registered", deployment, timeout=180, why=serving_log)
        assert [s["schedule"].get("cron") for s in dep["schedules"]] == [CRON]
        assert all(s["active"] for s in dep["schedules"]) and not dep["paused"]
        assert dep["parameters"] == {"repo": str(repo.resolve())}
        assert prefect_server.get(f"flows/{dep['flow_id']}")["name"] == FLOW

        run = prefect_server.post(f"deployments/{dep['id']}/create_flow_run", {})

        def finished() -> dict[str, Any] | None:
            r = prefect_server.get(f"flow_runs/{run['id']}")
            return r if r["state_type"] in TERMINAL else None

        done = until("the triggered run finished", finished, timeout=1200, every=2, why=serving_log)
        assert done["state_type"] == "COMPLETED", (done["state"], serving_log())
        assert done["deployment_id"] == dep["id"]
        n_stages = len(stage_order(repo))
        tasks = recorded_task_runs(prefect_server, run["id"], n_stages)
        assert sum(t.startswith("repro_stage-") for t in tasks) == n_stages >= 15
        assert "benchmark" in artifacts_of(prefect_server, run["id"])
    finally:
        stop(proc)
