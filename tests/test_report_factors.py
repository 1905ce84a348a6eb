"""`xstilts report --by FACTOR`, its numbers by hand: runs are written into a real MLflow store as a sweep leaves them
(target runs tagged with the phase run they started from, intermediate phase runs with their task's metadata),
without training; the sign test against the binomial distribution worked out by hand."""

import csv
import subprocess
import sys

import mlflow
import pytest

from sweeps.reporting.factors import build, sign_test

LANGUAGES = ("de", "fr", "es")
# intermediate phase runs: name -> (task, tags, started from)
PHASES = {
    "mnli": ("mnli", {"xstilts.task.complexity": "medium"}, None),
    "legal": ("legal_nli", {"xstilts.task.domain": "legal", "xstilts.task.complexity": "high"}, None),
    "squad": ("squad_v1", {"xstilts.task.complexity": "medium"}, None),
    "squad>mnli": ("mnli", {"xstilts.task.complexity": "medium"}, "squad"),
    "mnli>squad": ("squad_v1", {"xstilts.task.complexity": "medium"}, "mnli"),
}
# xnli test accuracy in de, fr, es (English is 90 throughout: never part of a zero-shot score) per start and seed
SCORES = {
    (None, "0"): (60, 50, 40), (None, "1"): (62, 52, 42),  # zero-shot 50, 52
    ("mnli", "0"): (70, 60, 50), ("mnli", "1"): (74, 64, 54),  # 60, 64
    ("legal", "0"): (65, 55, 45), ("legal", "1"): (67, 57, 53),  # 55, 59
    ("squad>mnli", "0"): (71, 61, 51), ("squad>mnli", "1"): (69, 59, 52),  # 61, 60
    ("mnli>squad", "0"): (70, 62, 50), ("mnli>squad", "1"): (70, 60, 50),  # 60.67, 60
}
TYPOS_DROPS = {"0": (4, 2, 0), "1": (6, 4, 2)}  # of the mnli runs: zero-shot drops 2 and 4


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("factors")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("grid", artifact_location=(folder / "artifacts").as_uri())
    sweep = client.create_run(experiment, tags={"xstilts.kind": "sweep", "xstilts.sweep": "grid"}).info.run_id
    phase_ids = {}
    for name, (task, tags, start) in PHASES.items():  # in order: a sequence's first phase exists before its second
        run = client.create_run(experiment, tags={
            "xstilts.kind": "phase", "xstilts.phase": "intermediate", "xstilts.task": task, "xstilts.seed": "0",
            "xstilts.train_language": "en", "xstilts.started_from_run_id": phase_ids.get(start, ""), **tags})
        client.log_param(run.info.run_id, "train.tuning", "full")
        client.set_terminated(run.info.run_id)
        phase_ids[name] = run.info.run_id
    for (start, seed), scores in SCORES.items():
        metrics = {"test/en/accuracy": 90.0, "selection/score": 0.9,
                   **{f"test/{lang}/accuracy": float(v) for lang, v in zip(LANGUAGES, scores)}}
        if start == "mnli":
            metrics.update({f"robustness/typos/{lang}/accuracy_drop": float(d)
                            for lang, d in zip(LANGUAGES, TYPOS_DROPS[seed])})
            metrics["robustness/typos/en/accuracy_drop"] = 30.0
        for worse in (0.0, 1.0):  # two trials per configuration: the report takes the better one by selection
            run = client.create_run(experiment, tags={
                "xstilts.kind": "phase", "xstilts.phase": "target", "xstilts.task": "xnli", "xstilts.seed": seed,
                "xstilts.encoder": "tiny-xlmr", "xstilts.started_from": start or "none",
                "xstilts.started_from_run_id": phase_ids.get(start, "")})
            for key, value in metrics.items():
                client.log_metric(run.info.run_id, key, value - worse * 20 if key != "selection/score" else
                                  value - worse / 10)
            client.set_terminated(run.info.run_id)
    return uri, client, sweep, folder


def view(store, *factors):
    uri, _, _, folder = store
    paths = build(["grid"], uri, folder / "_".join(factors), list(factors))
    rows = list(csv.reader(paths["csv"].open()))
    return paths, paths["markdown"].read_text(), rows


def test_sign_test_is_the_exact_binomial_two_sided_p():
    # 4 of 5 non-zero differences positive (the tie dropped): P(X <= 1) + P(X >= 4) = (1 + 5 + 5 + 1) / 32
    assert sign_test([1, 2, -1, 3, 0, 4]) == (4, 5, pytest.approx(12 / 32))
    assert sign_test([1.5] * 10) == (10, 10, pytest.approx(2 / 1024))
    assert sign_test([0, 0]) == (0, 0, 1.0)


def test_by_domain_groups_against_the_baseline_and_each_other(store):
    paths, markdown, _ = view(store, "domain")
    # general: mnli (60, 64), squad>mnli (61, 60) and mnli>squad (60.67, 60) per seed: seed 0 mean 60.56, seed 1 61.33
    # legal: 55, 59 -> 57 ± 2.83. Baselines: 50, 52 -> 51 ± 1.41 (the same for every configuration)
    general = [(60 + 61 + 182 / 3) / 3, (64 + 60 + 60) / 3]
    assert f"| general | mnli, mnli>squad_v1, squad_v1>mnli | 2 | {sum(general) / 2:.1f} ± " \
           f"{abs(general[0] - general[1]) / 2 ** 0.5:.1f} | 51.0 ± 1.4 | +{sum(general) / 2 - 51:.1f} |" in markdown
    assert "| legal | legal_nli | 2 | 57.0 ± 2.8 | 51.0 ± 1.4 | +6.0 |" in markdown
    # per language, legal: de 66 fr 56 es 49; baseline de 61 fr 51 es 41: 3 of 3 higher, p = 2 / 8
    assert "| legal vs no intermediate | +6.0 | 3 of 3 higher, p = 0.25 |" in markdown
    assert "| legal | 66.0 | 49.0 | 56.0 |" in markdown  # per language: de, es, fr
    assert "general vs legal" in markdown
    assert paths["plot"].stat().st_size > 1000


def test_by_order_compares_only_permutations_and_marks_what_is_within_the_seed_spread(store):
    _, markdown, rows = view(store, "order")
    assert "| squad_v1>mnli | squad_v1>mnli | 2 | 60.5 ± 0.7 | 51.0 ± 1.4 | +9.5 |" in markdown
    # mnli>squad_v1 (60.67, 60) vs squad_v1>mnli (61, 60): -0.17, inside the spread 0.71; per language
    # mnli>squad_v1 de 70 fr 61 es 50, squad_v1>mnli de 70 fr 60 es 51.5: one higher, one lower, one tie: p = 1
    assert "| mnli>squad_v1 vs squad_v1>mnli | -0.2 ≈ | 1 of 2 higher, p = 1 |" in markdown
    compared = {(r[1], r[2]) for r in rows if len(r) == 8 and r[0] == "xnli"}
    assert ("mnli", "mnli>squad_v1") not in compared and ("mnli", "squad_v1>mnli") not in compared  # no permutations
    assert ("mnli", "no intermediate") in compared


def test_by_complexity_and_robustness_drops_leave_english_out(store):
    _, markdown, rows = view(store, "complexity")
    assert "| high | legal_nli | 2 | 57.0 ± 2.8 |" in markdown
    drops = {(r[1], r[2]): (float(r[3]), float(r[4])) for r in rows[1:] if len(r) == 6 and r[2].startswith("drop:")}
    # medium holds mnli (drops 2, 4 over de fr es; English's 30 left out) and two sequences without drops
    assert drops[("medium", "drop:typos")] == (pytest.approx(3.0), pytest.approx(2 ** 0.5))


def test_report_by_factor_is_logged_to_the_sweep_run(store):
    _, client, sweep, _ = store
    view(store, "train_language")
    logged = {f.path for f in client.list_artifacts(sweep, "report")}
    assert {"report/by_train_language.md", "report/by_train_language.csv", "report/by_train_language.png"} <= logged


def test_unknown_factor_is_one_line_naming_the_valid_ones(store):
    uri, _, _, folder = store
    out = folder / "never"
    done = subprocess.run([sys.executable, "-m", "sweeps.cli", "report", "grid", "--by", "colour", "--out", str(out),
                           "--tracking-uri", uri], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "--by 'colour': unknown factor; valid: complexity, domain, order, train_language, encoder" in line
    assert "a task tag of these runs (complexity)" in line and "seed" in line
    assert not out.exists()
