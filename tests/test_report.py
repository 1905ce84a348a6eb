"""The report's numbers by hand: zero-shot means leave English out; the XTREME and XTREME-R scores count each task
over the benchmark's own languages, English included. Runs are written into a real MLflow store as a sweep leaves
them (tags and per-language metrics), without training."""

import csv

import mlflow
import pytest

from sweeps.reporting.report import build

RUNS = {  # (target, intermediate) -> per-language metrics
    ("xnli", "none"): {"test/en/accuracy": 90.0, "test/de/accuracy": 70.0, "test/fr/accuracy": 60.0},
    ("xnli", "mnli"): {"test/en/accuracy": 92.0, "test/de/accuracy": 76.0, "test/fr/accuracy": 68.0},
    ("xquad", "none"): {"validation/en/f1": 80.0, "validation/en/exact_match": 70.0,
                        "validation/de/f1": 60.0, "validation/de/exact_match": 40.0,
                        "validation/ro/f1": 50.0, "validation/ro/exact_match": 30.0},
    ("xquad", "mnli"): {"validation/en/f1": 84.0, "validation/en/exact_match": 74.0,
                        "validation/de/f1": 66.0, "validation/de/exact_match": 46.0,
                        "validation/ro/f1": 54.0, "validation/ro/exact_match": 36.0},
}


@pytest.fixture
def report(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("grid", artifact_location=(tmp_path / "artifacts").as_uri())
    for (target, intermediate), metrics in RUNS.items():
        run = client.create_run(experiment, tags={"xstilts.phase": "target", "xstilts.task": target,
                                                  "xstilts.started_from": intermediate, "xstilts.seed": "0"})
        for key, value in {**metrics, "selection/score": 1.0}.items():
            client.log_metric(run.info.run_id, key, value)
        client.set_terminated(run.info.run_id)
    paths = build("grid", uri, tmp_path / "report")
    return paths["markdown"].read_text(), list(csv.reader(paths["csv"].open()))


def test_zero_shot_cells_leave_english_out(report):
    markdown, _ = report
    # xnli: (70 + 60) / 2 = 65 and (76 + 68) / 2 = 72. xquad over de and ro: F1 55, EM 35 -> 45; F1 60, EM 41 -> 50.5
    assert "| none | 65.0 | 45.0 |" in markdown
    assert "| mnli | 72.0 (+7.0) | 50.5 (+5.5) |" in markdown


def test_xtreme_and_xtreme_r_scores_side_by_side(report):
    markdown, rows = report
    assert "| XTREME score (partial: 2 of 9 tasks) | XTREME-R score (partial: 2 of 10 tasks) |" in markdown
    # XTREME: xnli over en de fr (90 + 70 + 60) / 3 = 73.33; xquad over en de (no ro): F1 70, EM 55 -> 62.5;
    # score 67.92. XTREME-R: xquad with ro: F1 63.33, EM 46.67 -> 55; score 64.17. With MNLI: 73.08 and 69.33
    assert "| none | 65.0 | 45.0 | 67.9 | 64.2 |" in markdown
    assert "| mnli | 72.0 (+7.0) | 50.5 (+5.5) | 73.1 (+5.2) | 69.3 (+5.2) |" in markdown
    scores = {(row[0], row[1]): float(row[2]) for row in rows[1:] if row[1].endswith("score")}
    assert scores[("none", "XTREME score")] == pytest.approx((220 / 3 + 62.5) / 2)
    assert scores[("mnli", "XTREME-R score")] == pytest.approx((236 / 3 + 60) / 2)
