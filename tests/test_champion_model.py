"""MLflow's conventions on a real fit (the tiny model on the PAWS-X fixtures): the run lists the data it read as
MLflow datasets (name, context, source, and the digest defined in datamodules/sources.py:data_digest), it has system
metrics and its experiment a description; promoted, its champion is an MLflow pyfunc model that
`mlflow.pyfunc.load_model("models:/…@champion")` loads and that predicts on raw text what xstilts' own evaluation
predicted, and `mlflow models serve --env-manager local` serves the same predictions over HTTP."""

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from servers import free_port, stop_group
from sweeps.cli import main
from sweeps.config import PromoteConfig
from sweeps.tracking.registry import promote
from training import FIXTURES

pytestmark = pytest.mark.timeout(600)
EXPERIMENT = "conventions"
FIT = ["fit", "pawsx", "--data-dir", "fixtures", "--lr", "1e-3", "--epochs", "6", "--batch-size", "16",
       "--max-length", "64", "--eval-every", "25", "--experiment", EXPERIMENT, "--system-metrics-interval", "1"]
LANGUAGES = ("de", "en", "es", "fr")  # the PAWS-X fixture languages


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    assert main(FIT + ["--tracking-uri", uri]) == 0
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    return uri, client, run


@pytest.fixture(scope="module")
def champion(fitted):
    """The promoted champion, loaded the way MLflow users load a model."""
    uri, _, run = fitted
    result = promote("pawsx", uri, PromoteConfig(experiments=(EXPERIMENT,)))
    assert (result.model, result.run_id) == (f"xstilts-{EXPERIMENT}-pawsx", run.info.run_id)
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield result, mlflow.pyfunc.load_model(f"models:/{result.model}@champion")
    finally:
        mlflow.set_tracking_uri(before)


def digest(task, split: str, lang: str, limit) -> str:
    """The definition: SHA-256 of the data key's JSON (sorted keys), first 10 hex digits."""
    from datamodules.sources import split_key

    key = {**split_key(task, split, lang, FIXTURES, task.labels), "limit": limit}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:10]


def fixture_file(lang: str, split: str):
    return FIXTURES / "google" / "xtreme" / f"PAWS-X.{lang}" / f"{split}.jsonl"


def raw_rows(lang: str, split: str) -> pd.DataFrame:
    rows = [json.loads(line) for line in fixture_file(lang, split).read_text().splitlines()]
    return pd.DataFrame({"text_a": [r["sentence1"] for r in rows], "text_b": [r["sentence2"] for r in rows]})


def logged_predictions(client, run_id: str, lang: str, tmp_path) -> list[str]:
    from lightning_modules.predictions import read_table

    path = client.download_artifacts(run_id, f"predictions/pawsx/test/{lang}.parquet", str(tmp_path))
    return [record["prediction"] for record in read_table(path)]


def test_the_run_lists_its_datasets_with_source_context_and_digest(fitted, registry):
    _, client, run = fitted
    task = registry["pawsx"]
    inputs = client.get_run(run.info.run_id).inputs.dataset_inputs
    found = {(i.dataset.name, {t.key: t.value for t in i.tags}["mlflow.data.context"]): i.dataset for i in inputs}
    expected = {("pawsx/train/en", "training"): ("train", "en")}
    expected.update({(f"pawsx/{split}/{lang}", split): (split, lang)
                     for split in ("validation", "test") for lang in LANGUAGES})
    assert set(found) == set(expected)
    for (name, context), (split, lang) in expected.items():
        dataset = found[(name, context)]
        assert dataset.digest == digest(task, split, lang, None), name
        assert dataset.source_type == "local"
        assert json.loads(dataset.source) == {"uri": str(fixture_file(lang, split).resolve())}
        assert json.loads(dataset.profile) == {"num_rows": len(fixture_file(lang, split).read_text().splitlines())}
    assert len({d.digest for d in found.values()}) == len(found)  # each file its own digest


def test_the_run_has_system_metrics_and_its_experiment_a_description(fitted):
    _, client, run = fitted
    metrics = client.get_run(run.info.run_id).data.metrics
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(metrics)
    note = client.get_experiment(run.info.experiment_id).tags["mlflow.note.content"]
    assert f"`{EXPERIMENT}`" in note and "xstilts promote" in note


def test_the_champion_is_the_runs_logged_model(fitted, champion):
    _, client, run = fitted
    result, _ = champion
    version = client.get_model_version(result.model, result.version)
    (output,) = client.get_run(run.info.run_id).outputs.model_outputs
    model = client.get_logged_model(output.model_id)
    assert version.source == model.artifact_location and version.run_id == run.info.run_id
    assert model.status == "READY" and model.source_run_id == run.info.run_id
    # promoting again reuses the version and its model: no second copy of the checkpoint
    again = promote("pawsx", fitted[0], PromoteConfig(experiments=(EXPERIMENT,)))
    assert (again.moved, again.version) == (False, result.version)
    assert len(client.search_logged_models([run.info.experiment_id])) == 1


def test_pyfunc_champion_predicts_on_raw_text_as_the_evaluation_did(fitted, champion, tmp_path):
    _, client, run = fitted
    _, model = champion
    for lang in ("de", "en"):
        logged = logged_predictions(client, run.info.run_id, lang, tmp_path / lang)
        assert len(logged) == len(raw_rows(lang, "test")) and set(logged) == {"0", "1"}  # not a constant answer
        assert model.predict(raw_rows(lang, "test")) == logged, lang
    single = model.predict(pd.DataFrame({"text_a": ["Eva Virtanen verkaufte einen roten Stuhl."]}))
    assert len(single) == 1 and single[0] in ("0", "1")


def test_mlflow_models_serve_serves_the_champion(fitted, champion, tmp_path):
    uri, client, run = fitted
    result, _ = champion
    port = free_port()
    # the server runs uvicorn from the environment's bin folder, as in an activated virtual environment
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    environment = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": path}
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m",
                               f"models:/{result.model}@champion", "--env-manager", "local", "--host", "127.0.0.1",
                               "--port", str(port)], env=environment, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            assert server.poll() is None, "mlflow models serve exited"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                time.sleep(1)
        frame = raw_rows("fr", "test")
        body = json.dumps({"dataframe_split": frame.to_dict(orient="split")}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            served = json.loads(response.read())["predictions"]
        assert served == logged_predictions(client, run.info.run_id, "fr", tmp_path)
    finally:
        stop_group(server)
