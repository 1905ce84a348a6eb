"""Robustness evaluation: perturbations checked by hand (deterministic for a seed; labels, answers and tag alignment
untouched), the datamodule's perturbed copies (split names, cache keys, selection never perturbed), and the example
sweep (sweeps/examples/robustness.yaml) read back from MLflow: perturbed and adversarial metrics and their drops next
to the clean ones; `xstilts evaluate --perturb` on its checkpoint reproduces them."""

import json
import random
from dataclasses import replace
from pathlib import Path

import mlflow
import pytest
from training import FIXTURES

from datamodules.datamodule import TaskDataModule
from datamodules.sources import load_split
from datamodules.tasks import TaskError
from lightning_modules.formats import get_format
from lightning_modules.formats.base import FeatureSettings
from datamodules.perturb import (PERTURBATIONS, Dictionary, Perturber, Robustness, perturb_examples, recase,
                                 translate, typo)
from lightning_modules.metrics.robustness import parse_split, robustness_drops

EXAMPLE = Path(__file__).resolve().parents[1] / "sweeps" / "examples" / "robustness.yaml"
SENTENCE = "Anna Schmidt bought a red car in Berlin."
TOKENS = ["Anna", "Schmidt", "works", "for", "Siemens", "in", "Berlin", "."]


# ---------------------------------------------------------------------------------------------- one text

def test_each_perturbation_gives_the_hand_checked_text_for_seed_0():
    expected = {
        "typos": "Anna Schmidt obught a redr car in Berlin.",  # a swap (bought) and an insertion (red)
        "word_order": "Anna Schmidt bought a red car Berlin in.",  # the last window reordered, "." stays last
        "casing": "Anna Schmidt bought a red car In Berlin.",
        "code_switch": "Anna Schmidt bought a rot Wagen in Berlin.",  # into German for this example
    }
    for name in PERTURBATIONS:
        perturber = Perturber(name, seed=0)
        assert perturber.text(SENTENCE, "en", "0/text_a") == expected[name], name
        assert Perturber(name, seed=0).text(SENTENCE, "en", "0/text_a") == expected[name]  # no hidden state
        assert perturber.text(SENTENCE, "en", "0/text_a") != SENTENCE
    assert Perturber("typos", seed=1).text(SENTENCE, "en", "0/text_a") == "Anna Cshmidt bought aq red car n Berflin."
    assert Perturber("word_order", seed=1).text(SENTENCE, "en", "0/text_a") == \
        "Schmidt Anna bought car a red in Berlin."


def test_word_level_changes():
    assert [typo("Milan", random.Random(i)) for i in range(6)] == \
        ["Milpan", "Mikan", "Mian", "Mipan", "Milazn", "Imlan"]  # insert, replace, drop, replace, insert, swap
    assert typo("1999", random.Random(0)) is None and typo(",", random.Random(0)) is None  # numbers stay
    assert typo("Tokyo.", random.Random(0)).endswith(".")  # punctuation is not part of the word
    assert recase("...", random.Random(0)) is None and recase("Berlin", random.Random(0)) in ("BERLIN", "berlin")
    table = Dictionary.load().table("en", "de")
    assert table["bought"] == ["kaufte"] and table["the"] == ["der"]
    assert translate("Book", random.Random(0), table) == "Buch" and translate("Anna", random.Random(0), table) is None
    assert Dictionary.load().table("de", "en")["kaufte"] == ["bought"]  # both directions
    assert Perturber("code_switch").text("Борис живёт в Москве.", "ru", "0/x") == "Борис живёт в Москве."


def test_tokens_change_one_for_one():
    for name, expected in (("typos", ["Anha", "Scvhmidt", "works", "for", "Seimens", "inj", "Berlin", "."]),
                           ("casing", ["ANNA", "Schmidt", "Works", "FOR", "Siemens", "In", "BERLIN", "."]),
                           ("code_switch", ["Anna", "Schmidt", "arbeitet", "for", "Siemens", "in", "Berlin", "."])):
        assert Perturber(name).tokens(TOKENS, "en", "0/tokens") == expected
    with pytest.raises(TaskError):
        Perturber("word_order").tokens(TOKENS, "en", "0/tokens")


def test_user_dictionary_in_muse_format(tmp_path):
    path = tmp_path / "en-it.txt"
    path.write_text("car macchina\nred rosso\nbook libro\n")
    perturber = Perturber("code_switch", dictionary=Dictionary.load(path), rate=1.0)
    assert perturber.text("A red car.", "en", "0/t") == "A rosso macchina."
    assert perturber.key()["dictionary"] != Perturber("code_switch").key()["dictionary"]


# ---------------------------------------------------------------------------------------------- every format

def _perturbed(task, split, lang, name, limit=20, seed=0):
    clean = load_split(task, split, lang, FIXTURES)
    clean = clean.select(range(min(limit, len(clean))))
    return clean, perturb_examples(clean, task, lang, Perturber(name, seed))


def test_classification_perturbs_both_sentences_never_the_label(registry):
    clean, noisy = _perturbed(registry["pawsx"], "test", "de", "code_switch")
    assert noisy["label"] == clean["label"]
    assert sum(a != b for a, b in zip(clean["text_a"], noisy["text_a"])) > 10
    assert sum(a != b for a, b in zip(clean["text_b"], noisy["text_b"])) > 10
    again = _perturbed(registry["pawsx"], "test", "de", "code_switch")[1]
    assert again["text_a"] == noisy["text_a"]
    other_seed = _perturbed(registry["pawsx"], "test", "de", "code_switch", seed=1)[1]
    assert other_seed["text_a"] != noisy["text_a"]


def test_span_qa_perturbs_the_question_only_so_answers_stay_valid(registry):
    clean, noisy = _perturbed(registry["xquad"], "validation", "en", "typos")
    assert all(a != b for a, b in zip(clean["question"], noisy["question"]))
    assert noisy["context"] == clean["context"] and noisy["answers"] == clean["answers"] and noisy["id"] == clean["id"]
    for row in noisy:
        for start, text in zip(row["answers"]["answer_start"], row["answers"]["text"]):
            assert row["context"][start: start + len(text)] == text


def test_tagging_perturbs_tokens_one_for_one(registry):
    clean, noisy = _perturbed(registry["panx"], "test", "en", "typos")
    assert noisy["tags"] == clean["tags"]
    assert all(len(a) == len(b) for a, b in zip(clean["tokens"], noisy["tokens"]))
    assert sum(a != b for a, b in zip(clean["tokens"], noisy["tokens"])) == len(clean)


def test_multiple_choice_perturbs_context_and_choices_never_the_label(registry):
    clean, noisy = _perturbed(registry["copa"], "validation", "en", "casing")
    assert noisy["label"] == clean["label"]
    assert all(len(a) == len(b) for a, b in zip(clean["choices"], noisy["choices"]))
    assert all(a != b for a, b in zip(clean["context"], noisy["context"]))


def test_retrieval_pairs_perturb_the_source_side_only(registry):
    clean, noisy = _perturbed(registry["tatoeba"], "validation", "de", "word_order")
    assert noisy["target"] == clean["target"]
    assert sum(a != b for a, b in zip(clean["source"], noisy["source"])) > len(clean) // 2


# ---------------------------------------------------------------------------------------------- drops and config

def test_drops_are_clean_minus_perturbed_from_the_test_split():
    scores = {"test/en/accuracy": 80.0, "test/de/accuracy": 70.0, "test.typos/en/accuracy": 60.0,
              "test.typos/de/accuracy": 65.0, "test.typos/mean/accuracy": 62.5, "validation/en/accuracy": 90.0,
              "validation.typos/en/accuracy": 10.0, "test.casing/en/accuracy": 81.0,
              "test.anli_plus/en/accuracy": 40.0, "val/en/accuracy": 50.0}
    assert robustness_drops(scores, synthetic=PERTURBATIONS) == {
        "robustness/anli_plus/en/accuracy_drop": 40.0, "robustness/anli_plus/mean/accuracy_drop": 40.0,
        "robustness/casing/en/accuracy_drop": -1.0, "robustness/casing/mean/accuracy_drop": -1.0,
        "robustness/typos/de/accuracy_drop": 5.0, "robustness/typos/en/accuracy_drop": 20.0,
        "robustness/typos/mean/accuracy_drop": 12.5,
        "robustness/mean/accuracy_drop": 5.75}  # the synthetic perturbations' means (casing, typos), not ANLI
    assert robustness_drops({"test/en/perplexity": 10.0, "test.typos/en/perplexity": 14.0})[
        "robustness/typos/en/perplexity_drop"] == 4.0  # lower is better: perturbed - clean
    assert parse_split("test.code_switch") == ("test", "code_switch") and parse_split("val") == ("val", None)


def test_bad_perturbations_and_adversarial_sets_are_refused(tmp_path):
    from sweeps.engine.experiment import ExperimentError, load_experiment
    from sweeps.config import DataConfig, RunConfig
    from sweeps.runs.preflight import check_run
    from sweeps.engine.sweep import final_evaluation_data

    data = DataConfig(data_dir="fixtures")
    with pytest.raises(TaskError, match="valid: typos, word_order, casing, code_switch"):
        check_run(RunConfig(task="xnli", data=data.evolve(perturbations=("typo",))))
    with pytest.raises(TaskError, match="has labels"):
        check_run(RunConfig(task="xnli", data=data.evolve(adversarial=("pawsx",))))
    check_run(RunConfig(task="xnli", data=data.evolve(adversarial=("anli_plus",), perturbations=PERTURBATIONS)))
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("casing", "shouting"))
    with pytest.raises(ExperimentError, match="data.perturbations"):
        load_experiment(bad)
    full = data.evolve(perturbations=("typos",), perturb_seed=3, adversarial=("anli_plus",))
    assert final_evaluation_data(full, "intermediate", "mnli") == data  # only the targets' final evaluation
    assert final_evaluation_data(full, "target", "xnli") == full
    assert final_evaluation_data(full, "target", "pawsx").adversarial == ()  # ANLI does not fit PAWS-X


# ---------------------------------------------------------------------------------------------- the datamodule

def _datamodule(registry, tokenizer, tmp_path, seed=0):
    datamodule = TaskDataModule(registry["pawsx"], get_format("classification"), tokenizer, data_dir=FIXTURES,
                                eval_languages=["en", "de"], eval_splits=("test",),
                                settings=FeatureSettings(max_length=48), max_train_examples=16, max_eval_examples=16,
                                cache_root=tmp_path, robustness=Robustness(("typos", "code_switch"), seed=seed))
    datamodule.setup("fit")
    datamodule.setup("test")
    return datamodule


def test_datamodule_adds_perturbed_copies_with_their_own_cache_keys(registry, tiny, tmp_path):
    first = _datamodule(registry, tiny[1], tmp_path)
    names = [f"{s.split}/{s.lang}" for s in first.eval_sets]
    assert names == ["test/en", "test/de", "test.typos/en", "test.typos/de", "test.code_switch/en",
                     "test.code_switch/de"]
    clean, typos = first.eval_sets[0], first.eval_sets[2]
    assert typos.examples["label"] == clean.examples["label"] and typos.examples["text_a"] != clean.examples["text_a"]
    assert typos.features["input_ids"] != clean.features["input_ids"]
    assert first.perturbed["test.typos/en"]["changed"] == 1.0
    # English validation that selects the checkpoint is never perturbed
    selection = first.selection_set
    assert selection.split == "val"
    assert selection.examples["text_a"] == load_split(registry["pawsx"], "validation", "en", FIXTURES)["text_a"][:16]
    assert not any(first.cache_hits.values())
    again = _datamodule(registry, tiny[1], tmp_path)
    assert all(again.cache_hits.values())
    reseeded = _datamodule(registry, tiny[1], tmp_path, seed=1)
    assert reseeded.cache_hits["test/en"] and reseeded.cache_hits["val/en"]
    assert not reseeded.cache_hits["test.typos/en"] and not reseeded.cache_hits["test.code_switch/de"]


# ---------------------------------------------------------------------------------------------- the example sweep

def test_example_sweep_logs_perturbed_metrics_and_drops_next_to_the_clean_ones(tmp_path, tracking_uri):
    from sweeps.cli import main
    from sweeps.config import SweepConfig
    from sweeps.engine.sweep import preflight, run_sweep

    settings = SweepConfig(storage=f"sqlite:///{tmp_path / 'optuna.db'}", tracking_uri=tracking_uri)
    run_sweep(preflight(str(EXAMPLE), settings), settings)
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("robustness")
    (target,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'target-xnli'")
    metrics = target.data.metrics
    assert target.info.status == "FINISHED" and target.data.params["data.perturbations"] == str(PERTURBATIONS)
    languages = ["de", "en", "es", "fr"]
    for variant in PERTURBATIONS + ("anli_plus",):
        for lang in languages if variant != "anli_plus" else ["en"]:
            clean, perturbed = metrics[f"test/{lang}/accuracy"], metrics[f"test.{variant}/{lang}/accuracy"]
            assert metrics[f"robustness/{variant}/{lang}/accuracy_drop"] == pytest.approx(clean - perturbed)
        assert f"robustness/{variant}/mean/accuracy_drop" in metrics
        assert f"validation.{variant}/en/accuracy" in metrics
    assert "robustness/mean/accuracy_drop" in metrics
    assert "val/en/accuracy" in metrics and not any(k.startswith("val.") for k in metrics)  # selection: clean
    assert all(metrics[f"data/changed/test.{p}/{lang}"] == 1.0 for p in PERTURBATIONS for lang in languages)
    samples = json.loads(Path(client.download_artifacts(target.info.run_id, "robustness/samples.json")).read_text())
    for name, rows in samples.items():
        assert rows and all(row["clean"] != row["perturbed"] for row in rows), name
        assert all(row["clean"]["text_b"] != row["perturbed"]["text_b"] or
                   row["clean"]["text_a"] != row["perturbed"]["text_a"] for row in rows)

    # `xstilts evaluate --perturb` on the checkpoint: the same perturbed sets give the same scores
    assert main(["evaluate", f"runs:/{target.info.run_id}/checkpoint", "--data-dir", "fixtures", "--languages", "en",
                 "--eval-splits", "test", "--max-eval-examples", "24", "--perturb", "typos,casing",
                 "--adversarial", "anli_plus", "--tracking-uri", tracking_uri, "--experiment", "robustness",
                 "--run-name", "robust-eval"]) == 0
    (evaluation,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'robust-eval'")
    again = evaluation.data.metrics
    for key in ("test/en/accuracy", "test.typos/en/accuracy", "test.casing/en/accuracy", "test.anli_plus/en/accuracy",
                "robustness/typos/en/accuracy_drop", "robustness/anli_plus/en/accuracy_drop"):
        assert again[key] == pytest.approx(metrics[key]), key
    assert "test.code_switch/en/accuracy" not in again
