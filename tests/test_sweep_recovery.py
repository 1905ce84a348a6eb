"""A sweep killed mid-trial (SIGKILL of its process group, no clean-up of any kind) and started again: the study
completes, the killed trial is FAIL in Optuna and its slot retried with the same parameters, its MLflow runs say FAILED
(not RUNNING), and no phase configuration is trained to completion twice. The restarted worker waits for the killed
worker's heartbeat to go stale (sweeps/engine/sweep.py GRACE_SECONDS) before it takes the slot over."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import mlflow
import optuna
import pytest

from sweeps.engine.sweep import GRACE_SECONDS

pytestmark = [pytest.mark.timeout(1500), pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]

EXPERIMENT = """\
name: recovery
encoder: tiny-xlmr
data: {data_dir: fixtures, max_length: 48, max_train_examples: 120, max_eval_examples: 40, eval_splits: [test]}
budget: {trials: 2}
phases: {intermediate: [mnli], baseline: false, targets: [pawsx]}
train:
  intermediate: {lr: {low: 1.0e-4, high: 1.0e-3, log: true}, epochs: 1, batch_size: 16, eval_every: 4}
  target: {lr: {low: 1.0e-4, high: 1.0e-3, log: true}, epochs: 1, batch_size: 16, eval_every: 4}
"""
STUDIES = {"recovery/intermediate/mnli", "recovery/target/pawsx/from-mnli"}
TRIALS = 2


def tail(path) -> str:
    return path.read_text()[-4000:] if path.exists() else ""


def runs_of(client, query=""):
    experiment = client.get_experiment_by_name("recovery")
    return [] if experiment is None else client.search_runs([experiment.experiment_id], query, max_results=10000)


def trials_of(storage):
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage).trials
            for s in optuna.get_all_study_summaries(storage)}


def kill_when_a_later_phase_trains(command, folder, client, timeout=600):
    """Starts the sweep, waits until one phase run has finished and a later one is training, then SIGKILLs the
    sweep's whole process group."""
    log = folder / "first.log"
    with log.open("w") as out:
        sweep = subprocess.Popen(command, cwd=folder, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + timeout
        while True:
            assert sweep.poll() is None, f"the sweep ended before it could be killed:\n{tail(log)}"
            assert time.time() < deadline, f"no phase finished within {timeout} s:\n{tail(log)}"
            states = Counter(r.info.status for r in runs_of(client, "tags.`xstilts.kind` = 'phase'"))
            if states["FINISHED"] >= 1 and states["RUNNING"] >= 1:
                break
            time.sleep(0.5)
    finally:
        os.killpg(sweep.pid, signal.SIGKILL)
        sweep.wait()


def test_sweep_killed_mid_trial_resumes_and_retries_the_trial(tmp_path, tiny):
    path = tmp_path / "recovery.yaml"
    path.write_text(EXPERIMENT)
    uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}"
    client = mlflow.MlflowClient(uri)
    client.search_experiments()  # both stores exist before the sweep starts: the polling never races their creation
    optuna.storages.RDBStorage(storage)
    command = [sys.executable, "-m", "sweeps.cli", "sweep", str(path), "--storage", storage, "--tracking-uri", uri]

    kill_when_a_later_phase_trains(command, tmp_path, client)
    killed = {(name, t.number) for name, ts in trials_of(storage).items() for t in ts
              if t.state == optuna.trial.TrialState.RUNNING}
    assert killed, "no trial was running when the sweep was killed"
    left_running = {r.info.run_id: r for r in runs_of(client, "attributes.status = 'RUNNING'")
                    if r.data.tags.get("xstilts.kind") in ("trial", "phase")}
    assert {r.data.tags["xstilts.kind"] for r in left_running.values()} == {"trial", "phase"}
    killed_keys = {r.data.tags["xstilts.phase_key"] for r in left_running.values()
                   if r.data.tags["xstilts.kind"] == "phase"}

    started = time.time()
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert time.time() - started > GRACE_SECONDS  # it waited for the killed trial's heartbeat to go stale

    trials = trials_of(storage)
    assert set(trials) == STUDIES
    for name, study_trials in trials.items():  # each study complete: its budget of finished trials, none running
        states = Counter(t.state for t in study_trials)
        assert states[optuna.trial.TrialState.COMPLETE] + states[optuna.trial.TrialState.PRUNED] == TRIALS, states
        assert not states[optuna.trial.TrialState.RUNNING] and not states[optuna.trial.TrialState.WAITING]
    for name, number in killed:
        (dead,) = [t for t in trials[name] if t.number == number]
        assert dead.state == optuna.trial.TrialState.FAIL
        (retry,) = [t for t in trials[name] if number in t.user_attrs.get("retry_of", [])]
        assert retry.state == optuna.trial.TrialState.COMPLETE and retry.params == dead.params

    for run_id in left_running:  # the killed trial's trial run and phase run
        run = client.get_run(run_id)
        assert run.info.status == "FAILED" and run.data.tags["xstilts.abandoned"] == "worker died"
    everything = runs_of(client)
    assert not [r.info.run_id for r in everything if r.info.status == "RUNNING"]
    (parent,) = [r for r in everything if r.data.tags.get("xstilts.kind") == "sweep"]
    assert parent.info.status == "FINISHED"
    finished = Counter(r.data.tags["xstilts.phase_key"] for r in everything
                       if r.data.tags.get("xstilts.kind") == "phase" and r.info.status == "FINISHED")
    assert set(finished.values()) == {1}, finished  # no configuration trained to the end twice
    assert all(finished[key] == 1 for key in killed_keys)  # the killed phase was trained again, once
    # every finished trial has its own finished trial run
    trial_runs = Counter((r.data.tags["xstilts.study"], int(r.data.tags["xstilts.trial"])) for r in everything
                         if r.data.tags.get("xstilts.kind") == "trial" and r.info.status == "FINISHED")
    assert set(trial_runs) == {(name, t.number) for name, ts in trials.items() for t in ts
                               if t.state == optuna.trial.TrialState.COMPLETE}
    assert set(trial_runs.values()) == {1}

