"""`xstilts` leaves the process at once when a command returns (sweeps.cli.entry: no interpreter teardown); a fit
run that way has all of its tracking in the store: finished, every training-loss point, every score, the scores
file and the checkpoint. The training loss is logged every 10 steps, asynchronously: 20 steps give 2 points."""

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow

ROOT = Path(__file__).resolve().parents[1]


def test_a_fit_that_exits_at_once_has_written_everything(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run([sys.executable, "-m", "sweeps.cli", "fit", "panx", "--data-dir", "fixtures", "--max-steps",
                           "20", "--batch-size", "8", "--languages", "en,de", "--eval-splits", "test",
                           "--max-eval-examples", "16", "--experiment", "fast", "--tracking-uri", uri],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("fast").experiment_id])
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [9, 19]
    for lang in ("en", "de"):
        assert f"test/{lang}/f1" in run.data.metrics
    scores = json.loads(Path(client.download_artifacts(run.info.run_id, "scores.json", str(tmp_path))).read_text())
    assert scores["test/de/f1"] == run.data.metrics["test/de/f1"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")}
    assert {"checkpoint/encoder", "checkpoint/head.safetensors", "checkpoint/xstilts.json"} <= artifacts
