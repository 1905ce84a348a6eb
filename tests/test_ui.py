"""`xstilts ui` starts a real `mlflow server` on 127.0.0.1 against a store, prints its address, and serves the store's
runs over MLflow's REST API; a run tracked through it stores its checkpoint in the server's artifact store;
terminating its process group stops the server too, and so does stopping the `xstilts ui` process alone (SIGTERM,
SIGINT): none of the processes it started is left."""

import json
import signal
import time
import urllib.request

import mlflow
import pytest

from servers import (descendants, free_port, lines_of, port_open, stop_by_pid, stop_group, wait_for_address,
                     xstilts_server)
from sweeps.cli import main
from sweeps.tracking.store import tracked_run

pytestmark = pytest.mark.timeout(300)


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_ui_serves_the_store_over_the_rest_api(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with tracked_run(uri, "ui-check", "a-finished-run", {"xstilts.kind": "check"}) as run:
        run.log_metrics({"score": 0.75})
    client = mlflow.MlflowClient(uri)
    experiment_id = client.get_experiment_by_name("ui-check").experiment_id
    assert client.get_run(run.run_id).info.status == "FINISHED"

    port = free_port()
    ui = xstilts_server("ui", "--port", str(port), "--tracking-uri", uri, cwd=tmp_path)
    try:
        address, _ = wait_for_address(lines_of(ui.stdout), "MLflow UI at ", timeout=120)
        assert address == f"http://127.0.0.1:{port}"
        found = post(f"{address}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment_id]})
        (served,) = found["runs"]
        assert served["info"]["run_id"] == run.run_id and served["info"]["status"] == "FINISHED"
        assert {"key": "score", "value": 0.75} in [{k: m[k] for k in ("key", "value")}
                                                   for m in served["data"]["metrics"]]
        assert {"key": "xstilts.kind", "value": "check"} in served["data"]["tags"]
        # a checkpoint cannot be written in place into a server's artifacts: it is uploaded
        assert main(["fit", "panx", "--data-dir", "fixtures", "--languages", "en", "--eval-splits", "test",
                     "--max-train-examples", "32", "--max-eval-examples", "16", "--max-steps", "2", "--batch-size",
                     "8", "--max-length", "32", "--tracking-uri", address, "--experiment", "served"]) == 0
        served_client = mlflow.MlflowClient(address)
        (fitted,) = served_client.search_runs([served_client.get_experiment_by_name("served").experiment_id])
        assert fitted.info.status == "FINISHED" and fitted.info.artifact_uri.startswith("mlflow-artifacts:")
        files = {a.path for a in served_client.list_artifacts(fitted.info.run_id, "checkpoint")}
        assert {"checkpoint/encoder", "checkpoint/head.safetensors", "checkpoint/xstilts.json"} <= files
        assert (tmp_path / "mlartifacts").is_dir()
    finally:
        stop_group(ui)
    deadline = time.time() + 30
    while port_open(port) and time.time() < deadline:  # nothing of the server is left listening
        time.sleep(0.5)
    assert not port_open(port)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_stopping_ui_by_its_pid_stops_the_server_and_its_workers(tmp_path, how):
    port = free_port()
    ui = xstilts_server("ui", "--port", str(port), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                        cwd=tmp_path)
    try:
        wait_for_address(lines_of(ui.stdout), "MLflow UI at ", timeout=120)
        children = descendants(ui.pid)
        assert len(children) >= 2  # mlflow server and its uvicorn worker(s)
        stop_by_pid(ui, how, children, port)
    finally:
        stop_group(ui)
