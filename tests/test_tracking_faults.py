"""Tracking-server faults, against real `mlflow server` processes on 127.0.0.1: a store that does not answer fails
within the configured time in one line before anything trains; a server killed mid-fit leaves the fit to finish
into the local spool (one line naming it, exit status 3), and `xstilts sync` sends the run and its checkpoint to the
restarted server, where it ends FINISHED."""

import json
import socket
import subprocess
import sys
import time
import urllib.request

import mlflow
import pytest

from servers import MlflowServer, free_port
from sweeps.tracking import faults
from sweeps.tracking.store import open_store, tracked_run

pytestmark = pytest.mark.timeout(600)

TIMEOUT = 10  # --tracking-timeout of these tests
FIT = ["fit", "panx", "--data-dir", "fixtures", "--languages", "en,de", "--eval-splits", "test",
       "--max-train-examples", "200", "--max-eval-examples", "16", "--batch-size", "8", "--max-length", "32",
       "--tracking-timeout", str(TIMEOUT)]


def xstilts(*args, folder, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "sweeps.cli", *args], cwd=folder, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def errors(stderr: str) -> list[str]:
    """The lines a user sees as errors (Lightning's and MLflow's informational lines aside)."""
    return [line for line in stderr.splitlines() if "error" in line.lower() or "Traceback" in line]


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_a_store_that_does_not_answer_fails_within_the_timeout(kind):
    """`refused`: nothing listens on the port; `silent`: a socket that accepts connections and never answers."""
    port = free_port()
    listener = None
    if kind == "silent":
        listener = socket.socket()
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
    try:
        faults.configure(TIMEOUT)
        started = time.time()
        with pytest.raises(faults.TrackingUnavailable) as raised:
            open_store(f"http://127.0.0.1:{port}", "never")
        assert time.time() - started <= TIMEOUT
        assert "did not answer within 10 s" in str(raised.value) and "\n" not in str(raised.value)
    finally:
        if listener is not None:
            listener.close()


def test_fit_against_an_unreachable_server_stops_before_training_with_one_line(tmp_path):
    fit = xstilts(*FIT, "--max-steps", "2", "--tracking-uri", f"http://127.0.0.1:{free_port()}", folder=tmp_path)
    out, err = fit.communicate(timeout=300)
    assert fit.returncode == 3, err[-3000:]
    assert [line for line in err.splitlines() if line.strip()] == [
        line for line in err.splitlines() if line.startswith("xstilts fit: error: tracking store http://127.0.0.1:")]
    assert len(err.strip().splitlines()) == 1 and "nothing was run" in err
    assert "GPU available" not in out + err  # no trainer was built


def metric_history(address: str, run_id: str, key: str) -> list:
    url = f"{address}/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key={key}"
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read()).get("metrics", [])


def wait_for_training(address: str, experiment: str, fit, timeout: float = 300) -> str:
    """The run id, once the fit has logged its first training loss to the server."""
    client = mlflow.MlflowClient(address)
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert fit.poll() is None, fit.communicate()[1][-3000:]
        found = client.get_experiment_by_name(experiment)
        runs = client.search_runs([found.experiment_id]) if found else []
        if runs and metric_history(address, runs[0].info.run_id, "train/loss"):
            return runs[0].info.run_id
        time.sleep(0.3)
    raise AssertionError("the fit logged no training loss in time")


@pytest.mark.slow  # about 100 s on 2 shared cores: two server starts and a 120-step fit
def test_server_killed_mid_fit_the_run_is_spooled_then_synced(tmp_path):
    spool = tmp_path / "spool"
    server = MlflowServer(tmp_path).start()
    try:
        fit = xstilts(*FIT, "--max-steps", "120", "--epochs", "20", "--eval-every", "40", "--tracking-uri", server.address,
                      "--experiment", "faults", "--spool-dir", str(spool), folder=tmp_path)
        run_id = wait_for_training(server.address, "faults", fit)
        server.kill()
        killed = time.time()
        out, err = fit.communicate(timeout=300)
        ended = time.time() - killed
        assert fit.returncode == 3, err[-3000:]
        (line,) = errors(err)
        assert line.startswith(f"xstilts fit: error: tracking store {server.address} unreachable at ")
        assert f"run {run_id} (FINISHED) is kept in {spool / run_id}" in line and "xstilts sync" in line
        assert ended < 120, ended  # the rest of training, and at most one bounded failing call
        kept = spool / run_id
        assert {"encoder", "head.safetensors", "xstilts.json"} <= {p.name for p in (kept / "artifacts" /
                                                                                     "checkpoint").iterdir()}
        assert json.loads((kept / "record.json").read_text())["status"] == "FINISHED"

        server.start()  # the same store and artifacts, the same port
        assert mlflow.MlflowClient(server.address).get_run(run_id).info.status == "RUNNING"
        sync = xstilts("sync", "--spool-dir", str(spool), "--tracking-timeout", str(TIMEOUT), folder=tmp_path)
        out, err = sync.communicate(timeout=300)
        assert sync.returncode == 0, err[-3000:]
        assert f"sent run {run_id}" in out and "FINISHED" in out
        client = mlflow.MlflowClient(server.address)
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags["xstilts.spooled"].startswith(f"{server.address} unreachable at ")
        assert "test/de/f1" in run.data.metrics and "selection/score" in run.data.metrics
        steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
        assert steps == sorted(set(steps)) and steps[-1] == 119  # the spooled losses arrived, once each
        files = {a.path for a in client.list_artifacts(run_id, "checkpoint")}
        assert {"checkpoint/encoder", "checkpoint/head.safetensors", "checkpoint/xstilts.json"} <= files
        assert not kept.exists()
        assert (tmp_path / "artifacts").is_dir()
    finally:
        server.stop()


def test_a_run_spooled_by_a_dead_process_is_sent_as_failed_by_the_next_command(tmp_path):
    """A process killed while its run was spooled never wrote the run's end: the next command that reaches the store
    sends what was spooled and marks the run FAILED, never RUNNING forever."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource

    from sweeps.tracking.spool import Spool

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spool = tmp_path / "spool"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("dead")
    run_id = client.create_run(experiment).info.run_id
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = Spool(spool, uri, run_id, "a store out of reach")
    orphan.append({"op": "metrics", "metrics": {"train/loss": 1.5}, "step": 10, "timestamp": 1})
    read = MetaDataset(LocalArtifactDatasetSource(str(tmp_path / "test.jsonl")), name="pawsx/test/de",
                       digest="0123456789").to_dict()
    orphan.append({"op": "inputs", "inputs": [{"dataset": read, "tags": {"mlflow.data.context": "test"}}]})
    (spool / run_id / "writer.pid").write_text(dead.stdout.strip())
    with tracked_run(uri, "dead", "next-command", spool_dir=str(spool)):
        pass
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and run.data.metrics["train/loss"] == 1.5
    (replayed,) = run.inputs.dataset_inputs  # the spooled dataset input, as the runs table's Dataset column reads it
    assert (replayed.dataset.name, replayed.dataset.digest) == ("pawsx/test/de", "0123456789")
    assert json.loads(replayed.dataset.source)["uri"].endswith("test.jsonl")
    assert {t.key: t.value for t in replayed.tags} == {"mlflow.data.context": "test"}
    assert "the process ended before the run" in run.data.tags["xstilts.spooled"]
    assert not (spool / run_id).exists()
