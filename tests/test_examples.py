"""Each research question's experiment file in sweeps/examples/ runs end to end on the fixtures with the tiny model
(two seeds), and `xstilts report EXPERIMENT --by FACTOR` (the command README names for it) has the groups the
question asks for, each with its seed spread; the runs show the setting really happened."""

import csv
import subprocess
import sys
from collections import defaultdict

import pytest

from training import sweep_example

pytestmark = pytest.mark.slow  # four small sweeps of two seeds each: minutes on two cores


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny):
    folder = tmp_path_factory.mktemp("examples")
    return f"sqlite:///{folder / 'mlflow.db'}", f"sqlite:///{folder / 'optuna.db'}", folder


def sweep(name, store):
    return sweep_example(name, store)[1]


def report(name, factor, store):
    """The report command as README gives it (of one experiment, or a list side by side); (markdown, {target: {group:
    (mean, std, seeds)}}, comparisons)."""
    uri, _, folder = store
    names = name if isinstance(name, list) else [name]
    out = folder / f"{'+'.join(names)}-by-{factor}"
    done = subprocess.run([sys.executable, "-m", "sweeps.cli", "report", *names, "--by", factor, "--out", str(out),
                           "--tracking-uri", uri], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    stem = f"by_{factor.replace(',', '_')}"
    rows = list(csv.reader((out / f"{stem}.csv").open()))
    groups, comparisons = defaultdict(dict), []
    for row in rows[1:]:
        if len(row) == 6 and row[2] == "zero_shot":
            groups[row[0]][row[1]] = (float(row[3]), float(row[4]), int(row[5]))
        elif len(row) == 8 and row[0] != "target":
            comparisons.append((row[0], row[1], row[2], float(row[7])))
    assert (out / f"{stem}.png").stat().st_size > 1000
    return (out / f"{stem}.md").read_text(), groups, comparisons


def with_seed_spread(groups: dict) -> None:
    for group, (_, spread, seeds) in groups.items():
        assert seeds == 2, group
    assert any(spread > 0 for _, spread, _ in groups.values()), groups  # different seeds, different scores


def phase(runs, name, task, started_from=None):
    return [r for r in runs if r.data.tags.get("xstilts.phase") == name and r.data.tags["xstilts.task"] == task
            and (started_from is None or r.data.tags["xstilts.started_from"] == started_from)]


def test_domain_specific_vs_general(store):
    runs = sweep("domain", store)
    legal = phase(runs, "intermediate", "legal_nli")
    assert len(legal) == 2 and all(r.data.tags["xstilts.task.domain"] == "legal" for r in legal)
    markdown, groups, comparisons = report("domain", "domain", store)
    assert set(groups["pawsx"]) == {"general", "legal"}
    with_seed_spread(groups["pawsx"])
    pairs = {(first, second) for _, first, second, _ in comparisons}
    assert pairs == {("general", "legal"), ("general", "no intermediate"), ("legal", "no intermediate")}
    assert all(0 < p <= 1 for *_, p in comparisons) and "sign test" in markdown


def test_order_of_a_sequence(store):
    runs = sweep("order", store)
    for first, second in (("squad_v1", "mnli"), ("mnli", "squad_v1")):
        seconds = phase(runs, "intermediate", second, started_from=first)
        firsts = {r.info.run_id for r in phase(runs, "intermediate", first, started_from="none")}
        assert len(seconds) == 2 and {r.data.tags["xstilts.started_from_run_id"] for r in seconds} <= firsts
    _, groups, comparisons = report("order", "order", store)
    assert set(groups["pawsx"]) == {"mnli>squad_v1", "squad_v1>mnli"}
    with_seed_spread(groups["pawsx"])
    assert ("pawsx", "mnli>squad_v1", "squad_v1>mnli") in {c[:3] for c in comparisons}


def test_model_scale_and_robustness(store):
    runs = sweep("scale", store)
    sizes = {r.data.tags["xstilts.encoder"]: int(r.data.params["model.parameters"])
             for r in phase(runs, "target", "xnli", started_from="none")}
    assert sizes["tiny-xlmr-large"] > 2 * sizes["tiny-xlmr"]
    markdown, groups, _ = report("scale", "encoder", store)
    assert set(groups["xnli"]) == {"tiny-xlmr", "tiny-xlmr-large"}
    with_seed_spread(groups["xnli"])
    assert "| encoder | code_switch | code_switch (no intermediate) | typos | typos (no intermediate) |" in markdown
    for encoder in ("tiny-xlmr", "tiny-xlmr-large"):  # a drop per perturbation and seed spread for each encoder
        (row,) = [line for line in markdown.splitlines() if line.startswith(f"| {encoder} | ") and line.count("±") == 4]


def test_source_language_for_a_finnish_target(store):
    runs = sweep("source_language", store)
    (german, _) = phase(runs, "intermediate", "mnli_mt_de")
    assert german.data.tags["xstilts.train_language"] == "de" and "val/de/accuracy" in german.data.metrics
    assert all("validation/fi/f1" in r.data.metrics for r in phase(runs, "target", "tydiqa"))
    markdown, groups, _ = report("source_language", "train_language", store)
    assert set(groups["tydiqa"]) == {"en", "de", "fi"}
    with_seed_spread(groups["tydiqa"])
    assert "| train_language | fi | id | ru |" in markdown


def test_adapters_vs_full_by_complexity(store):
    full, adapter = sweep("complexity_full", store), sweep("complexity_adapter", store)
    for run in phase(adapter, "intermediate", "mnli") + phase(adapter, "target", "pawsx"):
        assert run.data.params["train.tuning"] == "adapter" and float(run.data.params["model.trainable_fraction"]) < 0.1
    assert all(float(r.data.params["model.trainable_fraction"]) > 0.9 for r in phase(full, "intermediate", "mnli"))
    _, groups, _ = report(["complexity_full", "complexity_adapter"], "tuning,complexity", store)
    assert set(groups["pawsx"]) == {"full · medium", "full · low", "adapter · medium", "adapter · low"}
    with_seed_spread(groups["pawsx"])


def test_mixture_vs_single_tasks(store):
    runs = sweep("mixture", store)
    (mixture, _) = phase(runs, "intermediate", "nli_copa")
    assert mixture.data.tags["xstilts.mixture.tasks"] and "val.copa/en/accuracy" in mixture.data.metrics
    _, groups, comparisons = report("mixture", "intermediate", store)
    assert set(groups["pawsx"]) == {"nli_copa", "mnli", "copa"}
    with_seed_spread(groups["pawsx"])
    assert ("pawsx", "copa", "nli_copa") in {c[:3] for c in comparisons} or \
        ("pawsx", "nli_copa", "copa") in {c[:3] for c in comparisons}
