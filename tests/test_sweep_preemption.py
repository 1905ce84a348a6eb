"""A sweep SIGTERMed mid-trial (as SLURM or Kubernetes preempt a job): the trial's fit saves a resumable checkpoint, its
runs end KILLED, the trial is failed and its slot freed at once, and the sweep exits 143. Started again, the sweep
retries the slot with the same parameters, its fit continues from the saved step (a new phase run tagged with the one
it resumes), and it completes."""

import os
import signal
import subprocess
import sys
import time

import mlflow
import optuna
import pytest

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow, pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]

EXPERIMENT = """\
name: preempted
encoder: tiny-xlmr
data: {data_dir: fixtures, max_length: 32, max_train_examples: 200, max_eval_examples: 16, eval_splits: [test]}
budget: {trials: 1}
phases: {intermediate: [mnli], baseline: false, targets: [pawsx]}
train:
  intermediate: {lr: 1.0e-3, epochs: 2, batch_size: 8, eval_every: 10}
  target: {lr: 1.0e-3, epochs: 1, batch_size: 8, eval_every: 10}
"""


def phase_runs(client):
    experiment = client.get_experiment_by_name("preempted")
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], "tags.`xstilts.kind` = 'phase'",
                              order_by=["attributes.start_time ASC"])


def steps(client, run_id):
    return [m.step for m in client.get_metric_history(run_id, "train/loss")]


def test_sigterm_mid_trial_queues_the_trial_again_and_the_retry_resumes(tmp_path):
    path = tmp_path / "preempted.yaml"
    path.write_text(EXPERIMENT)
    uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}"
    client = mlflow.MlflowClient(uri)
    client.search_experiments()
    optuna.storages.RDBStorage(storage)
    command = [sys.executable, "-m", "sweeps.cli", "sweep", str(path), "--storage", storage, "--tracking-uri", uri,
               "--checkpoint-every-steps", "5", "--checkpoint-dir", str(tmp_path / "checkpoints")]

    sweep = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    deadline = time.time() + 600
    while True:
        assert sweep.poll() is None, sweep.communicate()[1][-3000:]
        assert time.time() < deadline
        found = phase_runs(client)
        if found and max(steps(client, found[0].info.run_id), default=-1) >= 19:
            break
        time.sleep(0.2)
    os.killpg(sweep.pid, signal.SIGTERM)  # the whole job, as a scheduler stops it
    out, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 143, err[-3000:]
    assert "stopped by SIGTERM" in err

    (killed,) = phase_runs(client)
    assert killed.info.status == "KILLED" and killed.data.tags["xstilts.interrupted"] == "SIGTERM"
    saved = int(killed.data.tags["xstilts.resume_step"])
    assert max(steps(client, killed.info.run_id)) < saved
    (trial_run,) = client.search_runs([killed.info.experiment_id], "tags.`xstilts.kind` = 'trial'")
    assert trial_run.info.status == "KILLED"
    study = optuna.load_study(study_name="preempted/intermediate/mnli", storage=storage)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.FAIL]

    started = time.time()
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    study = optuna.load_study(study_name="preempted/intermediate/mnli", storage=storage)
    retry = study.trials[1]
    assert retry.state == optuna.trial.TrialState.COMPLETE and retry.params == study.trials[0].params
    assert retry.user_attrs["slot"] == 0 and retry.user_attrs["retry_of"] == [0]
    resumed = client.get_run(retry.user_attrs["phase_run_id"])
    assert resumed.info.status == "FINISHED"
    assert resumed.data.tags["xstilts.resumed_from_run_id"] == killed.info.run_id
    assert int(resumed.data.tags["xstilts.resumed_from_step"]) == saved
    assert min(steps(client, resumed.info.run_id)) >= saved  # no step before the checkpoint trained again
    assert max(steps(client, resumed.info.run_id)) == 49  # two epochs of 25 batches
    target = optuna.load_study(study_name="preempted/target/pawsx/from-mnli", storage=storage)
    assert [t.state for t in target.trials] == [optuna.trial.TrialState.COMPLETE]
    assert not [r for r in client.search_runs([killed.info.experiment_id]) if r.info.status == "RUNNING"]
    assert not list((tmp_path / "checkpoints").iterdir())


def test_sigterm_to_the_launcher_stops_every_worker(tmp_path):
    """`xstilts sweep --workers 2` stopped by its process id: it passes SIGTERM on to its workers (each saves its
    checkpoint and ends its runs) and none of the processes it started is left."""
    from servers import alive, descendants

    path = tmp_path / "preempted.yaml"
    path.write_text(EXPERIMENT)
    uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}"
    client = mlflow.MlflowClient(uri)
    launcher = subprocess.Popen([sys.executable, "-m", "sweeps.cli", "sweep", str(path), "--workers", "2",
                                 "--storage", storage, "--tracking-uri", uri, "--checkpoint-dir",
                                 str(tmp_path / "checkpoints")], cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 600
        while not [r for r in phase_runs(client) if steps(client, r.info.run_id)]:
            assert launcher.poll() is None, launcher.communicate()[1][-3000:]
            assert time.time() < deadline
            time.sleep(0.2)
        children = descendants(launcher.pid)
        assert len(children) >= 2
        launcher.send_signal(signal.SIGTERM)
        out, err = launcher.communicate(timeout=300)
        assert launcher.returncode == 143, err[-3000:]
        assert not [pid for pid in children if alive(pid)]
        assert not [r for r in client.search_runs([client.get_experiment_by_name("preempted").experiment_id])
                    if r.info.status == "RUNNING" and r.data.tags.get("xstilts.kind") != "sweep"]
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
