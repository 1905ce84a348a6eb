"""`xstilts score` against the official evaluation: XTREME's own mock submission (tests/data/xtreme_mock), whose
scores google-research/xtreme's evaluate_test.py lists as what evaluate.py gives."""

from pathlib import Path

import pytest

from sweeps.cli import main

MOCK = Path(__file__).parent / "data" / "xtreme_mock"

# evaluate_test.py, TASK2AVG_SCORES: the mean over each task's languages
OFFICIAL = {
    "pawsx": {"accuracy": 51.42857142857143},
    "xnli": {"accuracy": 30.666666666666668},
    "panx": {"f1": 57.50793650793652, "precision": 54.729166666666664, "recall": 62.750000000000014},
    "udpos": {"f1": 70.21746048354693, "precision": 71.02232625883823, "recall": 69.54982073976082},
    "bucc2018": {"f1": 55.0, "precision": 55.0, "recall": 55.0},
    "tatoeba": {"accuracy": 53.611111111111114},
    "xquad": {"exact_match": 77.27272727272727, "f1": 79.9586776859504},
    "mlqa": {"exact_match": 57.142857142857146, "f1": 81.76870748299321},
    "tydiqa": {"exact_match": 88.88888888888889, "f1": 97.22222222222223},
}


@pytest.fixture(scope="module")
def mock_scores(tmp_path_factory):
    import json

    out = tmp_path_factory.mktemp("score") / "scores.json"
    assert main(["score", str(MOCK / "predictions"), "--gold", str(MOCK / "labels"), "--out", str(out)]) == 0
    return json.loads(out.read_text())


@pytest.mark.parametrize("task", sorted(OFFICIAL))
def test_official_mock_submission_scores_as_evaluate_py(mock_scores, task):
    rows = [r for r in mock_scores["scores"] if r["task"] == task]
    assert len(rows) == len(list((MOCK / "predictions" / task).iterdir()))
    for metric, expected in OFFICIAL[task].items():
        assert sum(r["scores"][metric] for r in rows) / len(rows) == pytest.approx(expected, abs=1e-9)


def test_xtreme_score_of_the_mock_submission(mock_scores):
    xtreme = next(b for b in mock_scores["benchmarks"] if b["benchmark"] == "xtreme")
    # every task with every language: the unweighted mean of the task scores, QA as (F1 + EM) / 2
    task_scores = [(v["f1"] + v["exact_match"]) / 2 if "exact_match" in v else v.get("f1", v.get("accuracy"))
                   for v in OFFICIAL.values()]
    assert xtreme["partial"] is False
    assert xtreme["score"] == pytest.approx(sum(task_scores) / 9, abs=1e-9)
