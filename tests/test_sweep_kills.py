"""A sweep SIGKILLed at several moments — while it builds the feature cache, while a phase trains, while a phase writes
its checkpoint — and run again each time ends as an uninterrupted sweep of the same experiment does: the same
parameters in every trial slot, the same best parameters and scores in every study, no parameter set twice within a
study, and every phase configuration FINISHED once."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import mlflow
import optuna
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

EXPERIMENT = """\
name: kills
encoder: tiny-xlmr
data: {data_dir: fixtures, max_length: 32, max_train_examples: 256, max_eval_examples: 16, eval_splits: [test]}
budget: {trials: 3}
phases: {intermediate: [mnli], baseline: false, targets: [pawsx]}
train:
  intermediate: {lr: {low: 1.0e-4, high: 1.0e-3, log: true}, epochs: 2, batch_size: 8}
  target: {lr: [1.0e-3, 5.0e-4, 2.0e-4], epochs: 1, batch_size: 8}
"""
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def sweep_command(folder: Path) -> tuple[list[str], dict]:
    command = [sys.executable, "-m", "sweeps.cli", "sweep", "kills.yaml", "--storage",
               f"sqlite:///{folder / 'optuna.db'}", "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"]
    return command, {**os.environ, "XSTILTS_CACHE": str(folder / "cache"), "HF_DATASETS_CACHE": str(folder / "ds")}


def phase_runs(folder: Path, status: str):
    if not (folder / "mlflow.db").exists():
        return []
    client = mlflow.MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("kills")
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id],
                              f"tags.`xstilts.kind` = 'phase' and attributes.status = '{status}'")


def caching(folder: Path) -> bool:
    return any("features" in str(p) for p in (folder / "cache").rglob("*"))


def training(folder: Path) -> bool:
    client = mlflow.MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    return any(client.get_metric_history(r.info.run_id, "train/loss") for r in phase_runs(folder, "RUNNING"))


def checkpoints(folder: Path) -> set[Path]:
    return set(folder.glob("artifacts/*/*/artifacts/checkpoint"))


def writing_checkpoint(folder: Path) -> bool:
    """A phase's checkpoint folder has just appeared (its fit writes it last, before the run ends FINISHED)."""
    return bool(checkpoints(folder) - SEEN)


SEEN: set[Path] = set()


def kill_when(moment, folder: Path, timeout: float = 900) -> None:
    SEEN.clear()
    SEEN.update(checkpoints(folder))
    command, environment = sweep_command(folder)
    with (folder / "killed.log").open("a") as log:
        sweep = subprocess.Popen(command, cwd=folder, env=environment, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    try:
        deadline = time.time() + timeout
        while not moment(folder):
            assert sweep.poll() is None, (folder / "killed.log").read_text()[-4000:]
            assert time.time() < deadline, f"{moment.__name__} never happened"
            time.sleep(0.01 if moment is writing_checkpoint else 0.1)
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
        sweep.wait()


def run_to_end(folder: Path) -> None:
    command, environment = sweep_command(folder)
    done = subprocess.run(command, cwd=folder, env=environment, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]


def outcome(folder: Path) -> dict:
    storage = f"sqlite:///{folder / 'optuna.db'}"
    result = {}
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        finished = [t for t in study.trials if t.state in FINISHED]
        params = [tuple(sorted(t.params.items())) for t in finished]
        assert len(params) == len(set(params)) == 3, (summary.study_name, params)  # no parameter set twice
        result[summary.study_name] = {
            "slots": {t.user_attrs["slot"]: (t.params, t.state.name, t.value) for t in finished},
            "best": (study.best_trial.params, study.best_value)}
    return result


def test_killed_at_several_moments_ends_as_an_uninterrupted_sweep(tmp_path):
    uninterrupted, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    for folder in (uninterrupted, killed):
        folder.mkdir()
        (folder / "kills.yaml").write_text(EXPERIMENT)
    run_to_end(uninterrupted)
    for moment in (caching, training, writing_checkpoint):
        kill_when(moment, killed)
    run_to_end(killed)

    expected, found = outcome(uninterrupted), outcome(killed)
    assert set(found) == set(expected) == {"kills/intermediate/mnli", "kills/target/pawsx/from-mnli"}
    for name in expected:
        assert found[name]["slots"].keys() == expected[name]["slots"].keys() == {0, 1, 2}
        for slot, (params, state, value) in expected[name]["slots"].items():
            assert found[name]["slots"][slot][:2] == (params, state), (name, slot)
            assert found[name]["slots"][slot][2] == (None if value is None else pytest.approx(value, abs=1e-9))
        assert found[name]["best"][0] == expected[name]["best"][0], name
        assert found[name]["best"][1] == pytest.approx(expected[name]["best"][1], abs=1e-9), name
    assert set(Counter(r.data.tags["xstilts.phase_key"] for r in phase_runs(killed, "FINISHED")).values()) == {1}
    assert not phase_runs(killed, "RUNNING")
