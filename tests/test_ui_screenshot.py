"""The MLflow UI as a person sees it: a real fit tagged as a sweep's phase goes into a real store, `xstilts ui` serves
it, and headless Chromium (Debian's package `chromium`) renders the experiment's run table: the screenshot is a real
picture (its path is printed and recorded as the test's `screenshot` property), the rendered table's Dataset column
shows the run's training dataset with its digest, and the UI's REST API gives every run its dataset inputs.

Skipped where no Chromium is installed (`apt-get install chromium`; .ci/run installs it)."""

import json
import shutil
import subprocess
import urllib.request

import mlflow
import pytest
from PIL import Image

from servers import free_port, lines_of, stop_group, wait_for_address, xstilts_server
from sweeps.config import DataConfig, RunConfig, TrainConfig
from sweeps.runs.run import fit

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.timeout(600),
              pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found (Debian package chromium: apt-get "
                                                          "install chromium)")]
EXPERIMENT = "screenshot"


def chromium(url: str, *action: str) -> subprocess.CompletedProcess:
    """Headless Chromium on `url` once the UI's scripts ran (virtual time lets the page's requests finish)."""
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=1600,1000", "--virtual-time-budget=30000", *action, url],
                          capture_output=True, text=True, timeout=180)


def search_runs(address: str, experiment_id: str) -> list[dict]:
    request = urllib.request.Request(f"{address}/api/2.0/mlflow/runs/search",
                                     data=json.dumps({"experiment_ids": [experiment_id]}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["runs"]


def test_the_run_table_shows_the_dataset_column_filled(tmp_path, record_property):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tags = {"xstilts.sweep": EXPERIMENT, "xstilts.kind": "phase", "xstilts.phase": "target"}
    data = DataConfig(data_dir="fixtures", languages=("en", "de"), max_train_examples=32, max_eval_examples=16,
                      max_length=32)
    for lr in (1e-3, 3e-3):
        fit(RunConfig(task="pawsx", data=data, train=TrainConfig(lr=lr, max_steps=2, batch_size=8), tags=tags,
                      tracking_uri=uri, experiment=EXPERIMENT, system_metrics_interval=0))
    experiment_id = mlflow.MlflowClient(uri).get_experiment_by_name(EXPERIMENT).experiment_id

    port = free_port()
    ui = xstilts_server("ui", "--port", str(port), "--tracking-uri", uri, cwd=tmp_path)
    try:
        address, _ = wait_for_address(lines_of(ui.stdout), "MLflow UI at ", timeout=120)
        runs = search_runs(address, experiment_id)
        assert len(runs) == 2
        for run in runs:
            names = {d["dataset"]["name"] for d in run["inputs"]["dataset_inputs"]}
            assert {"pawsx/train/en", "pawsx/test/de", "pawsx/validation/en"} <= names
        digest = next(d["dataset"]["digest"] for d in runs[0]["inputs"]["dataset_inputs"]
                      if d["dataset"]["name"] == "pawsx/train/en")

        page = f"{address}/#/experiments/{experiment_id}/runs"
        shot = tmp_path / "run-table.png"
        taken = chromium(page, f"--screenshot={shot}")
        assert shot.exists(), taken.stderr[-2000:]
        print(f"screenshot of the run table: {shot}")
        record_property("screenshot", str(shot))
        with Image.open(shot) as image:
            assert image.size == (1600, 1000)
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 100  # a page, not a blank one
        rendered = chromium(page, "--dump-dom").stdout
        assert ">Dataset<" in rendered  # the column's header
        assert rendered.count(f"pawsx/train/en ({digest})") >= 2  # a cell of each run's row
    finally:
        stop_group(ui)
