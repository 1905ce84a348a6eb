"""`xstilts compare` on two real runs: score differences and disagreements, checked against the runs' own metrics
and prediction tables."""

import json

import mlflow
import pytest

from lightning_modules.predictions import read_table
from sweeps.cli import main

FIT = ["fit", "xnli", "--data-dir", "fixtures", "--max-length", "64", "--batch-size", "16", "--lr", "1e-3",
       "--eval-splits", "test", "--languages", "en,de", "--experiment", "pair"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    # an untrained model (it answers one class) and one trained for three epochs (above chance in English)
    assert main(FIT + ["--max-steps", "2", "--seed", "0", "--tracking-uri", uri]) == 0
    assert main(FIT + ["--epochs", "3", "--seed", "1", "--tracking-uri", uri]) == 0
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("pair").experiment_id],
                              order_by=["attributes.start_time ASC"])
    return uri, client, runs, folder


def _table(client, run, lang, folder):
    return read_table(client.download_artifacts(run.info.run_id, f"predictions/xnli/test/{lang}.parquet",
                                                str(folder / run.info.run_id)))


def test_compare_reports_differences_and_disagreements(pair, capsys):
    uri, client, (a, b), folder = pair
    assert main(["compare", a.info.run_id, f"runs:/{b.info.run_id}", "--tracking-uri", uri, "--show", "2"]) == 0
    printed = capsys.readouterr().out
    (comparison,) = client.search_runs([client.get_experiment_by_name("xstilts-compare").experiment_id])
    summary_file = client.download_artifacts(comparison.info.run_id, "compare/summary.json", str(folder))
    summary = json.loads(open(summary_file).read())
    languages = sorted(k.split("/")[1] for k in a.data.metrics if k.startswith("test/") and "mean" not in k)
    assert [row["language"] for row in summary["languages"]] == languages
    differing = 0
    for row in summary["languages"]:
        lang = row["language"]
        left, right = _table(client, a, lang, folder), _table(client, b, lang, folder)
        differ = [(x, y) for x, y in zip(left, right) if x["prediction"] != y["prediction"]]
        differing += len(differ)
        assert row["difference/accuracy"] == b.data.metrics[f"test/{lang}/accuracy"] - \
            a.data.metrics[f"test/{lang}/accuracy"]
        assert (row["examples"], row["disagreements"]) == (len(left), len(differ))
        assert row["only_a_right"] == sum(x["correct"] and not y["correct"] for x, y in differ)
        assert row["only_b_right"] == sum(y["correct"] and not x["correct"] for x, y in differ)
        assert f"xnli/test/{lang}" in printed
    assert differing > 0  # two differently trained models: there is something to show
    tables = {f.path for f in client.list_artifacts(comparison.info.run_id, "compare/xnli/test")}
    assert tables == {f"compare/xnli/test/{row['language']}.parquet" for row in summary["languages"]
                      if row["disagreements"]}
