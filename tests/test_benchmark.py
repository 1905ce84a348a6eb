"""XTREME / XTREME-R scores (sweeps/reporting/benchmark.py): the aggregation by hand, the task plan, and
`xstilts evaluate CHECKPOINT --benchmark xtreme` on the fixtures, printed and in MLflow alike."""

import re
from pathlib import Path

import pytest

from sweeps.reporting.benchmark import (BenchmarkResult, TaskResult, benchmark_score, benchmark_tasks, choose, head_fits,
                              language_means, task_score)

FIXTURES = Path(__file__).resolve().parents[1] / "datamodules" / "fixtures"
NLI = ["entailment", "neutral", "contradiction"]


def test_task_score_is_the_mean_over_languages_and_qa_averages_f1_and_em():
    table = {"de": {"accuracy": 50.0}, "en": {"accuracy": 70.0}, "fr": {"accuracy": 66.0}}
    assert task_score(table, "classification", "accuracy") == pytest.approx(62.0)
    qa = {"de": {"f1": 60.0, "exact_match": 40.0}, "en": {"f1": 80.0, "exact_match": 70.0}}
    assert language_means(qa, ("f1", "exact_match")) == pytest.approx({"f1": 70.0, "exact_match": 55.0})
    assert task_score(qa, "span_qa", "f1") == pytest.approx((70.0 + 55.0) / 2)
    # other numbers of a language (BUCC's precision, Tatoeba's reverse direction) do not enter
    bucc = {"de": {"f1": 80.0, "precision": 10.0}, "fr": {"f1": 60.0, "precision": 90.0}}
    assert task_score(bucc, "retrieval", "f1") == pytest.approx(70.0)


def test_xtreme_score_is_the_unweighted_mean_of_nine_task_scores():
    scores = {"xnli": 79.2, "pawsx": 86.4, "udpos": 72.6, "panx": 65.4, "xquad": (76.6 + 60.8) / 2,
              "mlqa": (71.6 + 53.2) / 2, "tydiqa": (65.1 + 45.0) / 2, "bucc2018": 66.0, "tatoeba": 57.3}
    total = 79.2 + 86.4 + 72.6 + 65.4 + 68.7 + 62.4 + 55.05 + 66.0 + 57.3
    assert benchmark_score(scores) == (pytest.approx(total / 9), [])
    # partial: two tasks missing, the mean of the seven others, and the missing ones named
    partial = {**scores, "pawsx": None, "bucc2018": None}
    assert benchmark_score(partial) == (pytest.approx((total - 86.4 - 66.0) / 7), ["pawsx", "bucc2018"])


def test_a_partial_benchmark_says_so_and_logs_every_number():
    xnli = TaskResult("xnli", "xnli", "classification", "accuracy", "test", ["de", "en", "fr"],
                      {"de": {"accuracy": 40.0}, "en": {"accuracy": 60.0}})
    xquad = TaskResult("xquad", "xquad", "span_qa", "f1", "validation", ["de", "en"],
                       {"de": {"f1": 50.0, "exact_match": 30.0}, "en": {"f1": 70.0, "exact_match": 50.0}})
    result = BenchmarkResult("xtreme", "ckpt", {"xnli": xnli, "xquad": xquad}, {"pawsx": "needs a head"})
    assert xnli.missing_languages == ["fr"] and xquad.missing_languages == []
    assert result.score == pytest.approx((50.0 + 50.0) / 2) and result.partial
    assert result.metrics() == pytest.approx({
        "xnli/de/accuracy": 40.0, "xnli/en/accuracy": 60.0, "xnli/mean/accuracy": 50.0, "xnli/score": 50.0,
        "xquad/de/f1": 50.0, "xquad/de/exact_match": 30.0, "xquad/en/f1": 70.0, "xquad/en/exact_match": 50.0,
        "xquad/mean/f1": 60.0, "xquad/mean/exact_match": 40.0, "xquad/score": 50.0,
        "xtreme/score": 50.0, "xtreme/tasks_evaluated": 2})
    complete = BenchmarkResult("xtreme", "ckpt", {"xquad": xquad})
    assert not complete.partial


def test_benchmark_task_sets(registry):
    xtreme = [t.name for t in benchmark_tasks(registry, "xtreme")]
    assert xtreme == ["xnli", "pawsx", "udpos", "panx", "xquad", "mlqa", "tydiqa", "bucc2018", "tatoeba"]
    xtreme_r = {t.name for t in benchmark_tasks(registry, "xtreme-r")}
    assert xtreme_r == set(xtreme) - {"pawsx", "bucc2018"} | {"xcopa", "lareqa", "mewslix"}


def test_what_a_checkpoint_can_be_evaluated_on_without_training(registry):
    nli = {"format": "classification", "labels": NLI}
    assert head_fits(registry["xnli"], nli) is None
    assert "labels" in head_fits(registry["pawsx"], nli)
    assert "span_qa" in head_fits(registry["xquad"], nli)
    assert head_fits(registry["tatoeba"], None) is None and head_fits(registry["xnli"], None)
    assert head_fits(registry["xquad"], {"format": "span_qa", "labels": None}) is None
    # the official BUCC files stand in for the hub's gold pairs where they are
    bucc = registry["bucc2018"]
    assert choose(bucc, registry, ["de", "fr"], FIXTURES).name == "bucc2018_official"
    assert choose(bucc, registry, ["de", "fr"], None).name == "bucc2018"


ROW = re.compile(r"^(\S+)\s+(test|validation)\s+(\S+)\s+(\S+)\s+(-?\d+\.\d\d)\s*$")


def test_cli_benchmark_on_fixtures_prints_the_table_mlflow_holds(tmp_path, tiny, tracking_uri, capsys):
    import mlflow

    from lightning_modules.checkpoint import save_checkpoint
    from lightning_modules.formats import get_format
    from sweeps.cli import main

    encoder, tokenizer = tiny
    head = get_format("classification").build_head(encoder, None, NLI)
    checkpoint = save_checkpoint(tmp_path / "ckpt", encoder, tokenizer, head, {
        "task": "mnli", "format": "classification", "labels": NLI, "train_task": "mnli",
        "encoder_source": "tiny-xlmr", "max_length": 128, "doc_stride": 64, "run_id": ""})
    submission = tmp_path / "submission"
    assert main(["evaluate", str(checkpoint), "--benchmark", "xtreme", "--data-dir", "fixtures",
                 "--tracking-uri", tracking_uri, "--eval-batch-size", "256", "--max-eval-examples", "24",
                 "--predictions", str(submission)]) == 0
    out = capsys.readouterr().out

    printed = {}
    for line in out.splitlines():
        match = ROW.match(line)
        if match:
            task, _, lang, metric, value = match.groups()
            printed[f"{task}/{lang}/{metric}" if lang != "score" else f"{task}/score"] = float(value)
    assert {key.split("/")[0] for key in printed} == {"xnli", "bucc2018", "tatoeba"}  # NLI head + retrieval
    assert printed["xnli/de/accuracy"] >= 0 and "bucc2018/de/f1" in printed and "tatoeba/fi/accuracy" in printed
    assert "(as bucc2018_official)" in out  # BUCC mined over the official files where they are
    headline = re.search(r"XTREME score: (\d+\.\d\d) \(partial: 3 of 9 tasks", out)
    assert headline, out
    for task in ("pawsx", "udpos", "panx", "xquad", "mlqa", "tydiqa"):
        assert f"missing {task}:" in out

    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("xstilts").experiment_id
    run = client.search_runs([experiment], "tags.`xstilts.command` = 'benchmark'")[0]
    logged = run.data.metrics
    assert {key: round(value, 2) for key, value in logged.items() if key in printed} == printed
    assert set(printed) <= set(logged)
    assert round(logged["xtreme/score"], 2) == float(headline.group(1))
    assert logged["xtreme/score"] == pytest.approx(
        (logged["xnli/score"] + logged["bucc2018/score"] + logged["tatoeba/score"]) / 3)
    assert run.data.tags["xstilts.benchmark.partial"] == "true"
    assert run.data.tags["xstilts.benchmark.task.bucc2018"] == "bucc2018_official"
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
    assert {c.data.tags["xstilts.benchmark_task"] for c in children} == {"xnli", "bucc2018", "tatoeba"}
    # the submission: one official file per task and language evaluated (BUCC under bucc2018, mined pairs by id)
    for task in ("xnli", "bucc2018", "tatoeba"):
        languages = {key.split("/")[1] for key in printed if key.startswith(f"{task}/") and key.count("/") == 2
                     and "/mean/" not in key}
        assert sorted(p.name for p in (submission / task).iterdir()) == sorted(f"test-{l}.tsv" for l in languages)
    assert all("\tde-" not in line and line.startswith("de-")
               for line in (submission / "bucc2018" / "test-de.tsv").read_text().splitlines())
