"""Devices: a fit on two CPU processes (Lightning's DDP over gloo) is one MLflow run with one checkpoint, its loss
logged once per step by rank 0; each rank trains on its share of the batches; `--gpus` shares a machine's GPUs out
between the local sweep workers."""

import math

import mlflow
import pytest

from datamodules.resumable import ShuffledBatches
from sweeps.cli import main
from sweeps.config import ConfigError
from sweeps.engine.devices import worker_devices, worker_environments

BATCH = 8


@pytest.fixture(scope="module")
def ddp_fit(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('ddp') / 'mlflow.db'}"
    assert main(["fit", "pawsx", "--data-dir", "fixtures", "--lr", "1e-3", "--epochs", "1", "--batch-size",
                 str(BATCH), "--max-length", "32", "--languages", "en,de", "--devices", "2", "--strategy", "ddp",
                 "--experiment", "ddp", "--tracking-uri", uri]) == 0
    client = mlflow.MlflowClient(uri)
    return uri, client, client.search_runs([client.get_experiment_by_name("ddp").experiment_id])


def test_ddp_fit_is_one_finished_run(ddp_fit):
    _, _, runs = ddp_fit
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert runs[0].data.params["train.devices"] == "2" and runs[0].data.params["train.strategy"] == "ddp"


def test_each_rank_trains_on_half_of_the_batches_and_the_loss_is_logged_once_per_step(ddp_fit):
    _, client, (run,) = ddp_fit
    batches = math.ceil(int(run.data.params["data.size.train"]) / BATCH)
    steps = math.ceil(batches / 2)  # one epoch: each of the two ranks takes every other batch
    validation = client.get_metric_history(run.info.run_id, "val/en/accuracy")
    # the epoch's one validation, after its last step (Lightning logs at the step's 0-based index)
    assert [m.step for m in validation] == [steps - 1]
    # TaskModule logs the loss on every 10th step (indices 9, 19, ...): once each, by rank 0 alone
    loss = client.get_metric_history(run.info.run_id, "train/loss")
    assert sorted(m.step for m in loss) == list(range(9, steps, 10)) and len(loss) >= 2


def test_ddp_checkpoint_is_one_and_evaluate_reproduces_its_scores(ddp_fit, tmp_path):
    uri, client, (run,) = ddp_fit
    assert {f.path for f in client.list_artifacts(run.info.run_id, "checkpoint")} == {
        "checkpoint/encoder", "checkpoint/head.safetensors", "checkpoint/xstilts.json"}
    assert main(["evaluate", f"runs:/{run.info.run_id}/checkpoint", "--data-dir", "fixtures", "--languages", "en,de",
                 "--max-length", "32", "--tracking-uri", uri, "--experiment", "ddp-evaluate"]) == 0
    (evaluation,) = client.search_runs([client.get_experiment_by_name("ddp-evaluate").experiment_id])
    for lang in ("en", "de"):
        key = f"test/{lang}/accuracy"
        assert evaluation.data.metrics[key] == pytest.approx(run.data.metrics[key], abs=1e-9)


def test_ranks_share_every_batch_of_an_epoch_equally():
    whole = ShuffledBatches(size=10, batch_size=3, seed=7).batches(0)  # 4 batches: 3, 3, 3 and 1 examples
    ranks = [ShuffledBatches(size=10, batch_size=3, seed=7).shard(rank, 3).batches(0) for rank in range(3)]
    assert [len(r) for r in ranks] == [2, 2, 2]  # ceil(4 / 3) each: the epoch's first two batches again at the end
    assert ranks == [[whole[0], whole[3]], [whole[1], whole[0]], [whole[2], whole[1]]]


@pytest.mark.parametrize("gpus, workers, expected", [
    ("0,1,2,3", 4, ["0", "1", "2", "3"]),
    ("0,1,2,3", 2, ["0,1", "2,3"]),
    ("4,5,6,7", 1, ["4,5,6,7"]),
    ("GPU-8f2a,GPU-11c0", 2, ["GPU-8f2a", "GPU-11c0"]),
])
def test_worker_devices_split_the_gpus_evenly_in_order(gpus, workers, expected):
    assert worker_devices(gpus, workers) == expected


@pytest.mark.parametrize("gpus, workers", [("0,1,2", 2), ("0,1", 3), ("0,1,2,3", 3)])
def test_worker_devices_refuse_an_uneven_split(gpus, workers):
    with pytest.raises(ConfigError, match=f"--workers {workers} cannot share --gpus {gpus} evenly"):
        worker_devices(gpus, workers)


def test_worker_environments_set_cuda_visible_devices_only_with_gpus():
    base = {"PATH": "/bin"}
    assert worker_environments(base, None, 2) == [base, base]
    assert worker_environments(base, "0,1", 2) == [{"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0"},
                                                   {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "1"}]
