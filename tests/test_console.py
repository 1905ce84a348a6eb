"""What a sweep prints: the banner in words, one progress line per run with its step and English validation score,
each library warning once however many trials repeat it, and the studies a time budget cut short (also tagged)."""

import re
import subprocess
import sys

import mlflow

EXPERIMENT = """\
name: console
encoder: tiny-xlmr
data: {data_dir: fixtures, max_length: 48, max_train_examples: 64, max_eval_examples: 24, eval_splits: [test]}
budget: {trials: 3, timeout_minutes: 0.001}
phases: {baseline: true, targets: [pawsx, panx]}
train:
  target: {lr: [1.0e-3, 5.0e-4, 2.0e-4], epochs: 1, batch_size: 16, eval_every: 2}
"""


def test_sweep_console(tmp_path, isolated_caches, tiny):
    path = tmp_path / "experiment.yaml"
    path.write_text(EXPERIMENT)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run([sys.executable, "-m", "sweeps.cli", "sweep", path, "--tracking-uri", uri, "--storage",
                           f"sqlite:///{tmp_path / 'optuna.db'}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-5000:]
    err = done.stderr
    assert "sweep console: encoder tiny-xlmr; intermediate none; targets pawsx, panx; 3 trials per study; time " \
           "limit 0.001 minutes" in err
    # 4 batches per epoch, fewer than Lightning's logging interval: every Trainer warns, the console shows it once
    assert err.count("is smaller than the logging interval") == 1, err
    assert err.count("GPU available:") == 1, err  # Lightning's per-Trainer info line too
    # a progress line at every validation (every 2 steps): step of the 4, the time left, the English score
    for study, metric in (("console/target/pawsx/from-none", "accuracy"), ("console/target/panx/from-none", "f1")):
        lines = re.findall(rf"^{re.escape(study)} trial 0: step (\d)/4 .*val/en/{metric} (\d+\.\d)$", err, re.M)
        assert [step for step, _ in lines] == ["2", "4"], err  # the last validation's line is not printed twice
    # a budget shorter than any trial (a study runs at least one): each got one of three, said and tagged
    for study in ("console/target/pawsx/from-none", "console/target/panx/from-none"):
        assert f"study {study} ran 1 of 3 trials" in err
    client = mlflow.MlflowClient(uri)
    (parent,) = client.search_runs([client.get_experiment_by_name("console").experiment_id],
                                   "tags.`xstilts.kind` = 'sweep'")
    assert parent.data.tags["xstilts.budget_cut"] == \
        "console/target/pawsx/from-none, console/target/panx/from-none"
