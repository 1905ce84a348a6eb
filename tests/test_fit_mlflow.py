"""`xstilts fit` end to end on the fixtures, read back from MLflow itself; `xstilts evaluate` reproduces it."""

import re

import mlflow
import pytest

from sweeps.cli import main

FIT = ["fit", "pawsx", "--data-dir", "fixtures", "--lr", "1e-3", "--epochs", "2", "--batch-size", "16",
       "--max-length", "64", "--eval-every", "10", "--experiment", "spine"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    assert main(FIT + ["--tracking-uri", uri]) == 0
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("spine").experiment_id])
    return uri, client, run


def fixture_languages(registry):
    from training import FIXTURES

    return sorted(p.name.split(".")[1] for p in (FIXTURES / "google" / "xtreme").glob("PAWS-X.*"))


def test_run_has_parameters_data_and_git_commit(fitted):
    _, _, run = fitted
    params, tags = run.data.params, run.data.tags
    assert run.info.status == "FINISHED"
    assert params["task"] == "pawsx" and params["train.lr"] == "0.001" and params["encoder"] == "tiny-xlmr"
    assert "google/xtreme" in params["data.train_sources"] and int(params["data.size.train"]) > 100
    assert len(tags["mlflow.source.git.commit"]) >= 40


def test_run_has_per_language_metrics_for_every_fixture_language(fitted, registry):
    _, client, run = fitted
    languages = fixture_languages(registry)
    assert len(languages) >= 3
    metrics = run.data.metrics
    for lang in languages:
        assert 0 <= metrics[f"test/{lang}/accuracy"] <= 100
        assert f"validation/{lang}/accuracy" in metrics
    assert metrics["test/mean/accuracy"] == pytest.approx(sum(metrics[f"test/{l}/accuracy"] for l in languages)
                                                          / len(languages))
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) > 1
    assert len(client.get_metric_history(run.info.run_id, "val/en/accuracy")) > 1  # every --eval-every steps


def test_checkpoint_is_loadable_and_evaluate_reproduces_the_logged_metric(fitted, capsys):
    uri, client, run = fitted
    files = {f.path for f in client.list_artifacts(run.info.run_id, "checkpoint")}
    assert {"checkpoint/encoder", "checkpoint/head.safetensors", "checkpoint/xstilts.json"} <= files
    assert main(["evaluate", f"runs:/{run.info.run_id}/checkpoint", "--data-dir", "fixtures",
                 "--tracking-uri", uri, "--experiment", "spine"]) == 0
    evaluation = max(client.search_runs([run.info.experiment_id]), key=lambda r: r.info.start_time)
    assert evaluation.data.tags["xstilts.checkpoint_run_id"] == run.info.run_id
    for key, value in run.data.metrics.items():
        if key.startswith(("test/", "validation/")):
            assert evaluation.data.metrics[key] == pytest.approx(value, abs=1e-6), key
    assert re.search(r"^test\s+de\s+\d+\.\d\d$", capsys.readouterr().out, re.MULTILINE)


def test_checkpoint_encoder_loads_without_its_head(fitted, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    uri, _, run = fitted
    mlflow.set_tracking_uri(uri)
    folder = mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/checkpoint/encoder", dst_path=tmp_path)
    encoder, tokenizer = AutoModel.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    assert encoder(**tokenizer("Hallo Welt", return_tensors="pt")).last_hidden_state.shape[-1] == 64
