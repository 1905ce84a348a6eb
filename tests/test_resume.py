"""Preemption: a fit SIGTERMed mid-epoch saves a resumable checkpoint, ends KILLED and exits 143; one SIGKILLed
mid-epoch keeps its last periodic checkpoint. Started again, each continues from the saved step (no step before it
is trained again: read from the logged step numbers) and ends with the weights, scores and losses of an
uninterrupted fit of the same seed (CPU)."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import mlflow
import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.timeout(900)

# 200 examples in batches of 8: 25 batches an epoch, so 60 steps cross two epoch ends; validation every 20 steps;
# a resumable checkpoint every 10 steps (those at 20, 40 are saved after that step's validation)
FIT = ["fit", "panx", "--data-dir", "fixtures", "--languages", "en,de", "--eval-splits", "test",
       "--max-train-examples", "200", "--max-eval-examples", "16", "--batch-size", "8", "--max-length", "32",
       "--lr", "1e-3", "--max-steps", "60", "--epochs", "20", "--eval-every", "20", "--checkpoint-every-steps", "10",
       "--seed", "3"]


def fit(folder, uri, experiment, checkpoints):
    command = [sys.executable, "-m", "sweeps.cli", *FIT, "--tracking-uri", uri, "--experiment", experiment,
               "--checkpoint-dir", str(checkpoints)]
    return subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def runs(client, experiment):
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])


def losses(client, run_id) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, "train/loss")}


def interrupt_after_first_checkpoint(process, checkpoints, how, busy_store=None):
    """Send `how` as soon as the fit has saved its first resumable checkpoint (mid-training). With `busy_store` (a
    sqlite file), two seconds later, the store taking no write meanwhile, as a busy one would: training goes on
    while the metrics it logs wait to be sent."""
    deadline = time.time() + 600
    while not list(checkpoints.glob("*/state.json")):
        assert process.poll() is None and time.time() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.005)
    if busy_store is None:
        process.send_signal(how)
        return process.communicate(timeout=300)
    lock = sqlite3.connect(busy_store, isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")  # readers go on, writers wait (MLflow's sqlite busy timeout: 20 s)
        time.sleep(2)
        process.send_signal(how)
        return process.communicate(timeout=300)
    finally:
        lock.execute("ROLLBACK")
        lock.close()


def weights(client, run_id, folder):
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="checkpoint", dst_path=str(folder),
                                                tracking_uri=client._tracking_client.tracking_uri)
    tensors = {f"head.{k}": v for k, v in load_file(os.path.join(local, "head.safetensors")).items()}
    tensors.update({f"encoder.{k}": v for k, v in load_file(os.path.join(local, "encoder",
                                                                         "model.safetensors")).items()})
    return tensors


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    process = fit(folder, uri, "whole", folder / "checkpoints")
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    client = mlflow.MlflowClient(uri)
    (run,) = runs(client, "whole")
    assert not any((folder / "checkpoints").iterdir())  # a finished fit leaves nothing to resume
    return client, run, weights(client, run.info.run_id, folder / "download")


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_interrupted_fit_resumes_and_ends_as_the_uninterrupted_one(tmp_path, uninterrupted, how):
    reference_client, reference, reference_weights = uninterrupted
    uri, checkpoints = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "checkpoints"
    client = mlflow.MlflowClient(uri)
    first = fit(tmp_path, uri, "preempted", checkpoints)
    busy_store = tmp_path / "mlflow.db" if how == signal.SIGKILL else None
    out, err = interrupt_after_first_checkpoint(first, checkpoints, how, busy_store)
    (killed,) = runs(client, "preempted")
    (folder,) = checkpoints.iterdir()
    saved = int(__import__("json").loads((folder / "state.json").read_text())["step"])
    if how == signal.SIGTERM:
        assert first.returncode == 143, err[-3000:]
        assert "stopped by SIGTERM" in err
        killed = client.get_run(killed.info.run_id)
        assert killed.info.status == "KILLED" and killed.data.tags["xstilts.interrupted"] == "SIGTERM"
        assert int(killed.data.tags["xstilts.resume_step"]) == saved
        uploaded = {a.path for a in client.list_artifacts(killed.info.run_id, "resume")}
        assert "resume/last.ckpt" in uploaded
        assert max(losses(client, killed.info.run_id)) < saved  # it stopped where it saved: nothing to redo
    else:
        assert first.returncode == -signal.SIGKILL
        assert saved % 10 == 0 and saved >= 10  # the last periodic checkpoint before the kill
        # every step before it is in the store: a checkpoint counts once the metrics logged before it were sent
        assert max(losses(client, killed.info.run_id)) >= saved - 1

    second = fit(tmp_path, uri, "preempted", checkpoints)
    out, err = second.communicate(timeout=600)
    assert second.returncode == 0, err[-3000:]
    resumed = runs(client, "preempted")[-1]
    assert resumed.info.status == "FINISHED"
    assert resumed.data.tags["xstilts.resumed_from_run_id"] == killed.info.run_id
    assert int(resumed.data.tags["xstilts.resumed_from_step"]) == saved
    after = losses(client, resumed.info.run_id)
    assert min(after) >= saved  # the retry trained from the saved step on: no step before it twice
    assert min(after) < saved + 10
    # the losses, before and after the interruption, are those of the uninterrupted fit
    expected = losses(reference_client, reference.info.run_id)
    before = {s: v for s, v in losses(client, killed.info.run_id).items() if s < saved}
    assert sorted({**before, **after}) == sorted(expected)
    for step, value in {**before, **after}.items():
        assert value == pytest.approx(expected[step], rel=1e-4, abs=1e-5), step
    for key, value in reference.data.metrics.items():
        if key.startswith(("test/", "selection/")):
            assert resumed.data.metrics[key] == pytest.approx(value, abs=1e-4), key
    final = weights(client, resumed.info.run_id, tmp_path / "download")
    assert final.keys() == reference_weights.keys()
    for name, tensor in final.items():
        torch.testing.assert_close(tensor, reference_weights[name], rtol=1e-4, atol=1e-5, msg=name)
    assert not any(checkpoints.iterdir())
