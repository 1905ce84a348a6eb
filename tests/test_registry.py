import re
import subprocess
import sys

import pytest

from datamodules.tasks import TaskError, load_registry, parse_task

PAPER_INTERMEDIATE = {"anli_plus", "mnli", "qqp", "squad_v1", "squad_v2", "hellaswag", "commonsenseqa", "cosmosqa",
                      "ccg"}
XTREME_LANGUAGE_COUNTS = {"xnli": 15, "pawsx": 7, "udpos": 33, "panx": 40, "xquad": 11, "mlqa": 7, "tydiqa": 9,
                          "bucc2018": 4, "tatoeba": 36}
# XTREME-R (google-research/xtreme: utils_preprocess.py, scripts/download_data.sh, utils_mewslix.py, train_xcopa.sh)
XTREME_R_LANGUAGE_COUNTS = {"xnli": 15, "xcopa": 11, "udpos": 38, "panx": 48, "xquad": 12, "mlqa": 7, "tydiqa": 9,
                            "tatoeba": 41, "lareqa": 11, "mewslix": 11}
XTREME_R_INTERMEDIATE = {"copa", "siqa"}  # XCOPA's English training data in XTREME-R
# translate-train intermediate data, one task per language (datamodules/tasks.yaml: one_task_per_language)
TRANSLATED = {"mnli_mt": 14, "pawsx_mt": 6, "squad_mt": 6, "squad_tt": 10, "tydiqa_tt": 8}
MLM_CORPORA = {"wikipedia_mlm"}
# the paper's 18, XTREME-R's 3 targets and 2 training sets, BUCC from the official files, the 2 catalog tasks, the
# translated intermediate tasks and the MLM corpus
ALL_TASKS = 26 + sum(TRANSLATED.values()) + len(MLM_CORPORA)


def test_registry_has_the_papers_eighteen_tasks(registry):
    translated = {n for n, t in registry.items() if t.train_language != "en" and t.kind == "intermediate"}
    assert {n for n, t in registry.items() if t.kind == "intermediate"} - translated == \
        PAPER_INTERMEDIATE | XTREME_R_INTERMEDIATE | MLM_CORPORA
    assert {n: len(t.benchmark_languages("xtreme")) for n, t in registry.items()
            if "xtreme" in t.benchmarks} == XTREME_LANGUAGE_COUNTS
    assert {n: len(t.benchmark_languages("xtreme-r")) for n, t in registry.items()
            if "xtreme-r" in t.benchmarks} == XTREME_R_LANGUAGE_COUNTS
    for task in registry.values():  # a task's languages are the union of its benchmark lists
        if task.benchmarks:
            assert set(task.languages) == {lang for b in task.benchmarks for lang in task.benchmark_languages(b)}


def test_xtreme_r_adds_the_languages_of_its_download_scripts(registry):
    added = {name: set(registry[name].benchmark_languages("xtreme-r")) - set(registry[name].benchmark_languages("xtreme"))
             for name in ("udpos", "panx", "tatoeba")}
    assert added == {"udpos": {"lt", "pl", "uk", "wo", "ro"}, "panx": {"qu", "pl", "uk", "az", "lt", "pa", "gu", "ro"},
                     "tatoeba": {"az", "lt", "pl", "uk", "ro"}}
    assert registry["xcopa"].train_task == "copa" and registry["bucc2018_official"].variant_of == "bucc2018"


def test_tatoeba_is_panx_without_en_ms_my_yo(registry):
    assert set(registry["tatoeba"].benchmark_languages("xtreme")) == \
        set(registry["panx"].benchmark_languages("xtreme")) - {"en", "ms", "my", "yo"}


def test_xnli_trains_on_mnli_and_xquad_mlqa_on_squad(registry):
    assert registry["xnli"].train_task == "mnli"
    assert registry["xquad"].train_task == registry["mlqa"].train_task == "squad_v1"


def test_cli_lists_tasks_with_language_counts():
    out = subprocess.run([sys.executable, "-m", "sweeps.cli", "tasks"], capture_output=True, text=True, check=True)
    rows = {line.split()[0]: re.search(r"\s(\d+|-)\s+(\d+|-)\s+(\d+)\s+([a-z ]+)$", line).groups()
            for line in out.stdout.splitlines()[1:]}
    assert len(rows) == ALL_TASKS
    for task, count in XTREME_LANGUAGE_COUNTS.items():
        assert rows[task][0] == str(count)  # XNLI 15, PAN-X 40, Tatoeba 36 ...
    for task, count in XTREME_R_LANGUAGE_COUNTS.items():
        assert rows[task][1] == str(count)
    for task, (_, _, total, languages) in rows.items():  # every language the task can be evaluated in
        assert int(total) == len(languages.split())


def test_help_imports_no_torch():
    code = ("import sys\nfrom sweeps.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules and 'lightning' not in sys.modules and 'mlflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


BASE = {"kind": "target", "format": "classification", "sources": [{"dataset": "x/y", "splits": {"test": "test"}}],
        "columns": {"text_a": "a", "label": "l"}, "labels": ["no", "yes"], "languages": ["en", "de"],
        "metric": "accuracy"}


@pytest.mark.parametrize("change, message", [
    ({"format": "regression"}, "unknown format 'regression'; built-in: classification, multiple_choice"),
    ({"metric": "f1"}, "metric 'f1' does not fit format classification; valid: accuracy"),
    ({"kind": "final"}, "unknown kind 'final'; valid: intermediate, target"),
    ({"colour": "red"}, "unknown option(s) colour; valid:"),
    ({"columns": {"text_a": "a"}}, "columns must map label"),
    ({"labels": None}, "format classification needs `labels`"),
    ({"languages": []}, "`languages` is empty"),
    ({"sources": [{"dataset": "x/y", "splits": {"dev": "dev"}}]}, "unknown split 'dev'; valid: train, validation, test"),
])
def test_bad_declarations_say_what_is_wrong_and_what_is_valid(change, message):
    with pytest.raises(TaskError, match="task 'mine'") as error:
        parse_task("mine", {**BASE, **change})
    assert message in str(error.value)


def test_user_tasks_file_adds_a_task(tmp_path):
    import yaml

    path = tmp_path / "tasks.yaml"
    path.write_text(yaml.safe_dump({"mine": BASE}))
    assert load_registry([path])["mine"].labels == ["no", "yes"]
    path.write_text(yaml.safe_dump({"mine": {**BASE, "train_task": "nope"}}))
    with pytest.raises(TaskError, match="train_task 'nope' is not a registered task"):
        load_registry([path])


def test_translated_data_is_one_task_per_source_language(registry):
    translated = {n: t for n, t in registry.items() if t.kind == "intermediate" and t.train_language != "en"}
    assert {name: sum(n.startswith(f"{name}_") for n in translated) for name in TRANSLATED} == TRANSLATED
    for name, task in translated.items():  # trained, selected and evaluated in its own language
        assert task.languages == [task.train_language] and name.endswith(f"_{task.train_language}")
    assert registry["tydiqa_tt_fi"].sources[0].local_only
    assert registry["mnli_mt_de"].sources[0].dataset == "facebook/xnli"


def test_every_intermediate_task_has_a_complexity(registry):
    levels = {n: t.tags.get("complexity") for n, t in registry.items() if t.kind == "intermediate"
              and t.format != "masked_lm"}
    assert set(levels.values()) == {"low", "medium", "high"}
    assert levels["qqp"] == "low" and levels["mnli"] == "medium" and levels["hellaswag"] == "high"
