"""The MLflow UI in a real, headless Chromium: what a user looks for after a sweep.

A 2-job sweep (the baseline pipeline on debug=fast, two SRAM sizes) writes a sqlite store; `mlflow ui` serves it;
selenium drives Debian's `chromium` through `chromedriver`. Skipped only when no browser or driver can be found.
The experiment opens on its runs (not MLflow 3's GenAI overview); a job's run shows the pipeline figure and its
deployed model; every stage's run carries the memory and accuracy names (issue 24). Screenshots go to a temp
folder, or to `TINYFLOW_SCREENSHOTS` when set; their paths are printed (`pytest -s`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import cli_env
from mlflow_server import mlflow_server

pytestmark = pytest.mark.slow

SWEEP = (
    "experiment=baseline",  # train, quantize, schedule, deploy: every kind of run and artifact, in seconds
    "debug=fast",
    "data=mnist5k",
    "device=custom",
    "device.sram_kb=128,256",
    "device.flash_kb=1024",
)
STAGES = ("train", "quantize", "schedule", "deploy")
WAIT_S = 30


def _find(env: str, *names: str) -> str | None:
    for candidate in (os.environ.get(env), *names):
        if candidate and (shutil.which(candidate) or Path(candidate).is_file()):
            return shutil.which(candidate) or candidate
    return None


def _browser() -> tuple[str, str]:
    """(chromium binary, chromedriver), or skip saying what is missing."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("selenium is not installed (it is in the `test` extra: pip install -e '.[test]')")
    binary = _find("TINYFLOW_CHROMIUM", "chromium", "chromium-browser", "google-chrome")
    driver = _find("TINYFLOW_CHROMEDRIVER", "chromedriver", "/usr/lib/chromium/chromedriver")
    if binary is None or driver is None:
        pytest.skip(
            "no headless browser found: install Debian's `chromium chromium-driver` (apt), or point "
            "TINYFLOW_CHROMIUM / TINYFLOW_CHROMEDRIVER at a Chromium and its chromedriver"
        )
    return binary, driver


def js_number(value: float) -> str:
    """How the UI (JavaScript) prints a metric: integers without `.0`, others as the shortest round trip."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass
class Ui:
    url: str
    driver: Any
    experiment_id: str
    parents: dict[str, Any]  # run name -> run
    children: dict[str, dict[str, Any]]  # parent run id -> stage name -> run
    shots: Path

    def open(self, fragment: str) -> None:
        self.driver.get(f"{self.url}/#{fragment}")

    def wait_text(self, *texts: str) -> str:
        """The page's text once it shows every one of `texts` (fails after WAIT_S)."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        def shown(driver: Any) -> str | bool:
            body = driver.find_element(By.TAG_NAME, "body").text
            return body if all(t in body for t in texts) else False

        try:
            return WebDriverWait(self.driver, WAIT_S).until(shown)
        except Exception as exc:
            self.driver.save_screenshot(str(self.shots / "failure.png"))
            raise AssertionError(f"the page never showed {texts}; screenshot {self.shots / 'failure.png'}") from exc


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    binary, driver_bin = _browser()
    from mlflow.tracking import MlflowClient
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    tmp = tmp_path_factory.mktemp("browser_ui")
    store = f"sqlite:///{(tmp / 'mlflow.db').as_posix()}"
    cmd = [sys.executable, "-m", "tinyflow", "-m", *SWEEP, f"tracking.uri={store}"]
    cmd += [f"hydra.sweep.dir={tmp / 'multirun'}", f"cache.dir={tmp / 'cache'}"]
    # cwd: the store's default artifact root (./mlruns) lands in tmp, not in the checkout
    res = subprocess.run(cmd, cwd=tmp, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    client = MlflowClient(tracking_uri=store)
    exp = client.get_experiment_by_name("tinyflow")
    runs = client.search_runs([exp.experiment_id])
    parents = {r.info.run_name: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    children: dict[str, dict[str, Any]] = {}
    for r in runs:
        if "mlflow.parentRunId" in r.data.tags:
            children.setdefault(r.data.tags["mlflow.parentRunId"], {})[r.data.tags["stage"]] = r
    assert {"custom-0", "custom-1"} <= set(parents), sorted(parents)

    options = Options()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1600,1000")
    shots = Path(os.environ.get("TINYFLOW_SCREENSHOTS") or tmp / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    with mlflow_server(store, tmp, ui=True) as server:
        driver = webdriver.Chrome(service=Service(driver_bin), options=options)
        try:
            yield Ui(server.url, driver, exp.experiment_id, parents, children, shots)
        finally:
            driver.quit()


def test_experiment_listed(ui: Ui) -> None:
    ui.open("/experiments")
    ui.wait_text("Experiments", "tinyflow")


def test_stage_runs_nested_under_the_parent(ui: Ui) -> None:
    """The runs table lists the jobs; expanding a job shows its stage runs right under it, indented."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def link(run: Any) -> list[Any]:
        href = f"#/experiments/{ui.experiment_id}/runs/{run.info.run_id}"
        return ui.driver.find_elements(By.CSS_SELECTOR, f"a[href='{href}']")

    parent, other = ui.parents["custom-0"], ui.parents["custom-1"]
    stages = ui.children[parent.info.run_id]
    assert set(stages) == set(STAGES)
    ui.open(f"/experiments/{ui.experiment_id}/runs")
    ui.wait_text("custom-0", "custom-1", "sweep-summary")
    WebDriverWait(ui.driver, WAIT_S).until(lambda _: link(parent))
    assert not any(link(r) for r in stages.values()), "stage runs listed before their job is expanded"
    # the parent row's only button expands its child runs
    link(parent)[0].find_element(By.XPATH, "./ancestor::div[@role='row']//button").click()
    WebDriverWait(ui.driver, WAIT_S).until(lambda _: all(link(r) for r in stages.values()))
    top = link(parent)[0].location
    below = [link(r)[0].location["y"] for r in ui.parents.values() if link(r) and link(r)[0].location["y"] > top["y"]]
    for name, run in stages.items():
        at = link(run)[0].location
        assert link(run)[0].text == name
        assert at["x"] > top["x"], f"stage run {name} is not indented under its job"
        assert top["y"] < at["y"] < min(below, default=10**6), f"stage run {name} is not right under its job"
    assert not any(link(r) for r in ui.children[other.info.run_id].values()), "the other job's stages are shown"


def test_parent_run_shows_accuracy_and_sram(ui: Ui) -> None:
    parent = ui.parents["custom-0"]
    ui.open(f"/experiments/{ui.experiment_id}/runs/{parent.info.run_id}")
    metrics = parent.data.metrics
    wanted = ("accuracy_float", "accuracy_int8", "peak_sram_bytes", "arena_bytes", "sram_budget_bytes", "flash_bytes")
    assert all(m in metrics for m in wanted), sorted(metrics)
    page = ui.wait_text("custom-0", *wanted)
    lines = page.splitlines()
    for name in wanted:  # the metrics table: the name on one line, its value on the next
        value = lines[lines.index(name) + 1]
        assert value == js_number(metrics[name]), f"{name}: the UI shows {value}, the store holds {metrics[name]}"
    assert metrics["sram_budget_bytes"] == 128 * 1024
    shot = ui.shots / "run_page.png"
    ui.driver.save_screenshot(str(shot))
    print(f"screenshot of the run page: {shot}")
    assert shot.stat().st_size > 10_000


def test_memory_profile_renders_in_the_artifact_view(ui: Ui) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    schedule = ui.children[ui.parents["custom-0"].info.run_id]["schedule"]
    ui.open(f"/experiments/{ui.experiment_id}/runs/{schedule.info.run_id}/artifacts/memory_profile.png")
    ui.wait_text("memory_profile.png", "plan.json")

    def rendered(driver: Any) -> list[Any]:
        imgs = driver.find_elements(By.CSS_SELECTOR, "img[src^='blob:']")
        return [i for i in imgs if int(i.get_attribute("naturalWidth") or 0) > 100]

    images = WebDriverWait(ui.driver, WAIT_S).until(rendered)
    width = int(images[0].get_attribute("naturalWidth"))
    height = int(images[0].get_attribute("naturalHeight"))
    assert width > 300 and height > 200, (width, height)  # a decoded PNG, not a broken-image icon
    ui.driver.save_screenshot(str(ui.shots / "memory_profile.png"))


def test_sweep_runs_compared_side_by_side(ui: Ui) -> None:
    """MLflow's compare view of the sweep's two jobs: parameters and metrics, one column per run."""
    a, b = ui.parents["custom-0"], ui.parents["custom-1"]
    runs = ",".join(f'"{r.info.run_id}"' for r in (a, b))
    ui.open(f'/compare-runs?runs=[{runs}]&experiments=["{ui.experiment_id}"]')
    names = sorted(a.data.metrics)
    assert names == sorted(b.data.metrics)

    def metric_values(page: str) -> list[str]:
        """The metrics table's values in page order: each metric name's (sorted) two values in turn."""
        lines = page.splitlines()
        try:
            section = lines[lines.index("Metrics", lines.index("Parameters")) :]
            section = section[: section.index("Artifacts")]
        except ValueError:
            return []
        return [v for v in section if v.replace(".", "", 1).replace("-", "", 1).isdigit()]

    # the first metric rows in name order: the accuracies and their intervals (accuracy_drop_int8, ...)
    page = ui.wait_text("Comparing 2 Runs", "custom-0", "custom-1", "device.sram_kb", "accuracy_drop_int8", "Artifacts")
    # parameters: one row per name, both runs' values on it
    row = next(line for line in page.splitlines() if line.startswith("device.sram_kb "))
    assert row.split()[1:] == ["128.0", "256.0"], row
    values = metric_values(page)
    # the view renders the metric rows of a fixed-height, virtualised table: the first ones, in name order
    shown_rows = len(values) // 2
    assert len(values) % 2 == 0 and shown_rows >= min(len(names), 15), (names, values)
    names = names[:shown_rows]
    for i, name in enumerate(names):
        if all(float(r.data.metrics[name]).is_integer() for r in (a, b)):  # the view rounds the others
            shown = values[2 * i : 2 * i + 2]
            assert shown == [js_number(r.data.metrics[name]) for r in (a, b)], (name, shown)
    assert a.data.metrics["sram_budget_bytes"] != b.data.metrics["sram_budget_bytes"]
    ui.driver.save_screenshot(str(ui.shots / "compare.png"))


def _shot(ui: Ui, name: str) -> Path:
    shot = ui.shots / name
    ui.driver.save_screenshot(str(shot))
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000
    return shot


def test_the_experiment_opens_on_its_runs_not_the_genai_overview(ui: Ui) -> None:
    """The experiment's default page is the runs table, not the GenAI overview (traces, empty charts). MLflow 3.17's
    UI takes the experiment's kind from its workflow switch ("GenAI" by default, "Model training"; the link's
    `workflowType`, which tinyflow's printed link carries); older 3.x read the experiment's `mlflow.experimentKind`
    tag, which tinyflow sets too."""
    import requests
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    ui.open(f"/experiments/{ui.experiment_id}?workflowType=machine_learning")  # the link tinyflow prints
    page = ui.wait_text("custom-0", "custom-1")
    WebDriverWait(ui.driver, WAIT_S).until(lambda d: "/runs" in d.current_url)
    assert "/overview" not in ui.driver.current_url and "/traces" not in ui.driver.current_url
    rows = ui.driver.find_elements(By.CSS_SELECTOR, "div[role='row']")
    assert len(rows) >= 3, "no runs table"  # header, the two jobs (and the sweep summary)
    assert "No traces" not in page and "Traces: 0" not in page
    _shot(ui, "experiment_landing.png")
    answer = requests.get(
        f"{ui.url}/ajax-api/2.0/mlflow/experiments/get", params={"experiment_id": ui.experiment_id}, timeout=WAIT_S
    )
    tags = {t["key"]: t["value"] for t in answer.json()["experiment"]["tags"]}
    assert tags["mlflow.experimentKind"] == "custom_model_development"


def test_the_parent_run_shows_the_pipeline_figure_and_the_deployed_model(ui: Ui) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tinyflow.pipeline_figure import FIGURE_FILE
    from tinyflow.tracking import DEPLOYED_MODEL_NAME

    parent = ui.parents["custom-0"]
    (output,) = parent.outputs.model_outputs
    ui.open(f"/experiments/{ui.experiment_id}/runs/{parent.info.run_id}")
    page = ui.wait_text("custom-0", "Logged models", DEPLOYED_MODEL_NAME)
    assert "Logged models\n—" not in page
    href = f"models/{output.model_id}"
    links = WebDriverWait(ui.driver, WAIT_S).until(
        lambda d: [a for a in d.find_elements(By.TAG_NAME, "a") if href in (a.get_attribute("href") or "")]
    )
    assert links, f"no link to the deployed model {output.model_id}"
    ui.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", links[0])
    _shot(ui, "parent_run.png")

    ui.open(f"/experiments/{ui.experiment_id}/runs/{parent.info.run_id}/artifacts/{FIGURE_FILE}")
    ui.wait_text(FIGURE_FILE, "report.md")

    def rendered(driver: Any) -> list[Any]:
        imgs = driver.find_elements(By.CSS_SELECTOR, "img[src^='blob:']")
        return [i for i in imgs if int(i.get_attribute("naturalWidth") or 0) > 600]

    image = WebDriverWait(ui.driver, WAIT_S).until(rendered)[0]
    assert int(image.get_attribute("naturalHeight")) > 200
    _shot(ui, "pipeline_figure.png")


def test_every_stage_run_has_memory_and_accuracy_through_the_rest_api(ui: Ui) -> None:
    """The stage × (memory, accuracy) matrix, as the UI's own REST API (`/ajax-api`) serves it: all ✓."""
    import requests

    from tinyflow.metrics_vocabulary import coverage

    answer = requests.post(
        f"{ui.url}/ajax-api/2.0/mlflow/runs/search",
        json={"experiment_ids": [ui.experiment_id], "max_results": 1000},
        timeout=WAIT_S,
    )
    answer.raise_for_status()
    runs = answer.json()["runs"]
    for parent in ui.parents.values():
        if not parent.info.run_name.startswith("custom-"):
            continue
        matrix = {}
        for run in runs:
            tags = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
            if tags.get("mlflow.parentRunId") == parent.info.run_id:
                metrics = [m["key"] for m in run["data"].get("metrics", [])]
                matrix[tags["stage"]] = coverage(metrics, tags)
        assert set(matrix) == set(STAGES), (parent.info.run_name, sorted(matrix))
        assert all(all(c.values()) for c in matrix.values()), (parent.info.run_name, matrix)
