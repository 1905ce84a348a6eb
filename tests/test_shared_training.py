"""Targets that train on the same English task from the same start with the same settings share one training run:
XQuAD and MLQA both train SQuAD v1.1. In a sweep with both, SQuAD is trained once (one fit run, one `xstilts.train_key`);
the other target's phase is an evaluation of that checkpoint on its own languages, tagged `xstilts.trained_in`, with
the training's English validation score, and its scores are those `xstilts evaluate` gives for the checkpoint."""

import subprocess
import sys

import mlflow

EXPERIMENT = """\
name: shared
encoder: tiny-xlmr
data: {data_dir: fixtures, max_length: 64, doc_stride: 16, max_train_examples: 32, max_eval_examples: 8,
       eval_splits: [test]}
budget: {trials: 1}
phases: {intermediate: [], baseline: true, targets: [xquad, mlqa]}
train:
  target: {lr: 1.0e-3, epochs: 1, batch_size: 16}
"""


def test_xquad_and_mlqa_share_one_squad_training(tmp_path, tiny):
    path = tmp_path / "shared.yaml"
    path.write_text(EXPERIMENT)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run([sys.executable, "-m", "sweeps.cli", "sweep", str(path), "--tracking-uri", uri, "--storage",
                           f"sqlite:///{tmp_path / 'optuna.db'}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("shared").experiment_id],
                              "tags.`xstilts.kind` = 'phase'")
    assert {r.data.tags["xstilts.task"] for r in runs} == {"xquad", "mlqa"} and len(runs) == 2
    (fit,) = [r for r in runs if r.data.tags["xstilts.command"] == "fit"]
    (evaluation,) = [r for r in runs if r.data.tags["xstilts.command"] == "evaluate"]
    assert fit.data.tags["xstilts.train_task"] == "squad_v1"
    assert evaluation.data.tags["xstilts.trained_in"] == fit.info.run_id
    assert evaluation.data.tags["xstilts.train_key"] == fit.data.tags["xstilts.train_key"]
    assert evaluation.data.tags["xstilts.phase_key"] != fit.data.tags["xstilts.phase_key"]
    assert evaluation.data.metrics["selection/score"] == fit.data.metrics["selection/score"]
    own = "mlqa" if fit.data.tags["xstilts.task"] == "xquad" else "xquad"
    assert evaluation.data.tags["xstilts.task"] == own
    again = subprocess.run([sys.executable, "-m", "sweeps.cli", "evaluate", f"runs:/{fit.info.run_id}/checkpoint",
                            "--task", own, "--data-dir", "fixtures", "--max-length", "64", "--doc-stride", "16",
                            "--max-eval-examples", "8", "--eval-splits", "test", "--tracking-uri", uri,
                            "--experiment", "check"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    (check,) = client.search_runs([client.get_experiment_by_name("check").experiment_id])
    scores = {k: v for k, v in evaluation.data.metrics.items() if k.startswith("test/")}
    assert scores and all(abs(check.data.metrics[k] - v) < 1e-6 for k, v in scores.items())
