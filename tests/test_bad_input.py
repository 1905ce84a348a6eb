"""Bad input gets one clear error naming what is wrong and what is valid, and no run is left FINISHED."""

import json
import shutil

import mlflow
import pytest
from training import FIXTURES

from sweeps.cli import main


def fit(args, uri):
    return main(["fit", *args, "--tracking-uri", uri, "--experiment", "bad", "--max-steps", "2", "--epochs", "1"])


def runs(uri):
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("bad")
    return client.search_runs([experiment.experiment_id]) if experiment else []


@pytest.mark.parametrize("args, message", [
    (["nosuchtask"], "unknown task 'nosuchtask'; registered: anli_plus"),
    (["pawsx", "--languages", "en,xx"], "task 'pawsx' has no language 'xx'; valid: de, en, es, fr, ja, ko, zh"),
    (["pawsx", "--encoder", "./no/such/model"], "encoder path ./no/such/model does not exist"),
    (["pawsx", "--encoder", "org/not-cached"], "is not in the local Hugging Face cache and HF_HUB_OFFLINE=1"),
    (["ccg"], "task 'ccg' has no public source (ccgbank): pass --data-dir DIR"),
    (["pawsx", "--data-dir", "/no/such/dir"], "--data-dir /no/such/dir is not a folder"),
])
def test_errors_before_any_run_starts(args, message, tracking_uri, capsys):
    assert fit(args, tracking_uri) == 2
    assert message in capsys.readouterr().err
    assert all(r.info.status != "FINISHED" for r in runs(tracking_uri))


def copy_pawsx(tmp_path, edit):
    """The fixture layout for PAWS-X in en and de, with the English train file rewritten by `edit`."""
    for lang in ("en", "de"):
        shutil.copytree(FIXTURES / "google/xtreme" / f"PAWS-X.{lang}", tmp_path / "google/xtreme" / f"PAWS-X.{lang}")
    train = tmp_path / "google/xtreme/PAWS-X.en/train.jsonl"
    rows = [json.loads(line) for line in train.read_text().splitlines()]
    train.write_text("".join(json.dumps(r) + "\n" for r in edit(rows)))
    return train


def set_label(rows, index, value):
    rows[index]["label"] = value
    return rows


@pytest.mark.parametrize("edit, message", [
    (lambda rows: set_label(rows, 3, "2"), "row 3: column 'label' has label '2'; valid: 0, 1"),
    (lambda rows: [{k: v for k, v in r.items() if k != "sentence2"} for r in rows],
     "missing column(s) sentence2; columns present: sentence1, label"),
    (lambda rows: [], "no rows for task 'pawsx' language 'en'"),
])
def test_bad_data_names_file_row_and_field_and_the_run_fails(edit, message, tmp_path, tracking_uri, capsys):
    train = copy_pawsx(tmp_path, edit)
    assert fit(["pawsx", "--data-dir", str(tmp_path), "--languages", "en,de"], tracking_uri) == 2
    error = capsys.readouterr().err
    assert message in error and (str(train) in error or "no rows" in error)
    assert [r.info.status for r in runs(tracking_uri)] == ["FAILED"]
