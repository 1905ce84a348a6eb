"""Every evaluation writes its per-example predictions: a table per task, split and language in the MLflow run,
and with `evaluate --predictions DIR` the XTREME submission files. `xstilts score` on either gives back exactly the
metrics the run logged."""

import json

import mlflow
import pytest

from sweeps.cli import main

TRAINED = {"pawsx": "test", "xcopa": "test", "xquad": "validation", "panx": "test", "udpos": "test"}
RETRIEVAL = {"tatoeba": "validation", "bucc2018": "test", "mewslix": "test"}
SUFFIX = {"xquad": "json", "xcopa": "jsonl", "mewslix": "json"}
SMALL = ["--data-dir", "fixtures", "--max-length", "64", "--doc-stride", "16"]


def _runs(uri, experiment):
    client = mlflow.MlflowClient(uri)
    found = client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                               order_by=["attributes.start_time DESC"])
    return client, found


def _per_language(metrics: dict, split: str | None = None) -> dict:
    return {key: value for key, value in metrics.items() if key.count("/") == 2 and "mean" not in key
            and not key.startswith(("val/", "robustness/", "data/")) and (split is None or key.startswith(f"{split}/"))}


def _scored(tmp_path, *args) -> dict:
    out = tmp_path / f"scores-{len(list(tmp_path.glob('scores-*')))}.json"
    assert main(["score", *args, "--out", str(out)]) == 0
    return {f"{r['split']}/{r['lang']}/{metric}": value
            for r in json.loads(out.read_text())["scores"] for metric, value in r["scores"].items()}


def _check_tables(client, run, task, expected_keys):
    tables = {a["path"] for a in json.loads(run.data.tags["mlflow.loggedArtifacts"]) if a["type"] == "table"}
    pairs = {tuple(key.split("/")[:2]) for key in expected_keys}
    assert tables == {f"predictions/{task}/{split}/{lang}.parquet" for split, lang in pairs}


def _check_submission(folder, task, split, metrics):
    languages = sorted({key.split("/")[1] for key in _per_language(metrics, split)})
    assert languages
    files = sorted(p.name for p in (folder / task).iterdir())
    assert files == sorted(f"test-{lang}.{SUFFIX.get(task, 'tsv')}" for lang in languages)
    return languages


@pytest.mark.parametrize("task", sorted(TRAINED))
def test_fit_and_evaluate_write_predictions_that_score_to_the_logged_metrics(task, tmp_path):
    uri, split = f"sqlite:///{tmp_path / 'mlflow.db'}", TRAINED[task]
    store = ["--tracking-uri", uri, "--experiment", "predictions"]
    assert main(["fit", task, *SMALL, "--max-steps", "2", "--batch-size", "8", "--eval-splits", split, "--lr", "1e-3",
                 *store]) == 0
    client, (fitted,) = _runs(uri, "predictions")
    logged = _per_language(fitted.data.metrics)
    assert logged
    _check_tables(client, fitted, task, logged)
    # the run's own tables, downloaded from MLflow, score to exactly the logged numbers; so does re-scoring them
    # against the gold read from the data
    assert _scored(tmp_path, f"runs:/{fitted.info.run_id}", "--tracking-uri", uri) == logged
    assert _scored(tmp_path, f"runs:/{fitted.info.run_id}", "--tracking-uri", uri, "--gold", "fixtures") == logged

    submission = tmp_path / "submission"
    assert main(["evaluate", f"runs:/{fitted.info.run_id}/checkpoint", *SMALL, "--eval-splits", split,
                 "--predictions", str(submission), *store]) == 0
    client, (evaluated, _) = _runs(uri, "predictions")
    metrics = _per_language(evaluated.data.metrics, split)
    _check_tables(client, evaluated, task, metrics)
    _check_submission(submission, task, split, evaluated.data.metrics)
    assert _scored(tmp_path, str(submission), "--gold", "fixtures") == metrics


# what an official file holds: Tatoeba one direction, BUCC the thresholded pairs
OFFICIAL_METRICS = {"tatoeba": ("accuracy",), "bucc2018": ("f1", "precision", "recall"), "mewslix": ("map_at_20",)}


@pytest.mark.parametrize("task", sorted(RETRIEVAL))
def test_retrieval_evaluation_writes_predictions_that_score_to_the_logged_metrics(task, tmp_path):
    uri, split = f"sqlite:///{tmp_path / 'mlflow.db'}", RETRIEVAL[task]
    submission = tmp_path / "submission"
    assert main(["evaluate", "tiny-xlmr", "--task", task, *SMALL, "--eval-splits", split, "--predictions",
                 str(submission), "--tracking-uri", uri, "--experiment", "predictions"]) == 0
    client, (evaluated,) = _runs(uri, "predictions")
    metrics = _per_language(evaluated.data.metrics)
    _check_tables(client, evaluated, task, metrics)
    assert _scored(tmp_path, f"runs:/{evaluated.info.run_id}", "--tracking-uri", uri) == metrics
    _check_submission(submission, task, split, evaluated.data.metrics)
    official = _scored(tmp_path, str(submission), "--gold", "fixtures")
    assert official == {key: value for key, value in metrics.items() if key.split("/")[2] in OFFICIAL_METRICS[task]}


def test_tables_past_mlflows_tag_limit_are_still_logged(tmp_path):
    # MLflow lists a run's tables in one tag of at most 8000 characters: 110 tables overflow it
    from lightning_modules.predictions import read_table, table_path, to_frame
    from sweeps.tracking.store import tracked_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    records = [{"index": 0, "input": "x", "gold": ["B-PER"], "prediction": ["O"], "correct": False}]
    with tracked_run(uri, "tables", "many") as run, run.tables() as tables:
        for i in range(110):
            tables.add(to_frame(records), table_path("panx", "test.code_switch", f"l{i:03d}"))
    client = mlflow.MlflowClient(uri)
    logged = client.get_run(run.run_id).data.tags["mlflow.loggedArtifacts"]
    assert 7000 < len(logged) <= 8000
    files = client.list_artifacts(run.run_id, "predictions/panx/test.code_switch")
    assert len(files) == 110
    assert read_table(client.download_artifacts(run.run_id, files[-1].path, str(tmp_path))) == records


def test_promoted_champions_write_their_submission_files(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["fit", "pawsx", *SMALL, "--max-steps", "2", "--batch-size", "8", "--tracking-uri", uri,
                 "--experiment", "grid"]) == 0
    (run,) = _runs(uri, "grid")[1]
    submission = tmp_path / "submission"
    assert main(["promote", "pawsx", "--tracking-uri", uri, "--predictions", str(submission)]) == 0
    languages = _check_submission(submission, "pawsx", "test", run.data.metrics)
    assert _scored(tmp_path, str(submission), "--gold", "fixtures") == _per_language(run.data.metrics, "test")
    again = tmp_path / "all"
    assert main(["promote", "--list", "--tracking-uri", uri, "--predictions", str(again)]) == 0
    assert sorted(p.name for p in (again / "pawsx").iterdir()) == [f"test-{lang}.tsv" for lang in languages]
