"""The offline fixtures (datamodules/fixtures): hub schemas, every registered config/split, valid labels, exact QA
offsets, IOB2 tags, parallel languages, and a byte-identical re-generation."""

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from datamodules.fixtures import generate as gen

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "datamodules" / "fixtures"
# the tasks the bundled fixtures cover: not those whose data a command builds on this machine (`build`: the
# gettext-catalog tasks, datamodules/fixtures/catalogs.py)
TASKS = {name: spec for name, spec in
         yaml.safe_load((ROOT / "datamodules" / "tasks.yaml").read_text(encoding="utf-8")).items()
         if not all("build" in source for source in spec["sources"])}

# Columns (in order) of every dataset, as the hub has them; the key is "<dataset id>/<config>" with the
# language part of xtreme configs dropped.
SCHEMAS = {
    "google/xtreme/XNLI": ["language", "sentence1", "sentence2", "gold_label"],
    "google/xtreme/PAWS-X": ["sentence1", "sentence2", "label"],
    "google/xtreme/udpos": ["tokens", "pos_tags"],
    "google/xtreme/PAN-X": ["tokens", "ner_tags", "langs"],
    "google/xtreme/XQuAD": ["id", "context", "question", "answers"],
    "google/xtreme/MLQA": ["id", "title", "context", "question", "answers"],
    "google/xtreme/tydiqa": ["id", "title", "context", "question", "answers"],
    "google/xtreme/bucc18": ["source_sentence", "target_sentence", "source_lang", "target_lang"],
    "google/xtreme/tatoeba": ["source_sentence", "target_sentence", "source_lang", "target_lang"],
    "nyu-mll/glue/mnli": ["premise", "hypothesis", "label", "idx"],
    "nyu-mll/glue/qqp": ["question1", "question2", "label", "idx"],
    "facebook/anli/plain_text": ["uid", "premise", "hypothesis", "label", "reason"],
    "stanfordnlp/snli/plain_text": ["premise", "hypothesis", "label"],
    "rajpurkar/squad/plain_text": ["id", "title", "context", "question", "answers"],
    "rajpurkar/squad_v2/squad_v2": ["id", "title", "context", "question", "answers"],
    "Rowan/hellaswag/default": ["ind", "activity_label", "ctx_a", "ctx_b", "ctx", "endings", "source_id", "split",
                                "split_type", "label"],
    "tau/commonsense_qa/default": ["id", "question", "question_concept", "choices", "answerKey"],
    "allenai/cosmos_qa/default": ["id", "context", "question", "answer0", "answer1", "answer2", "answer3", "label"],
    "ccgbank/default": ["tokens", "ccg_tags"],
    "local/mlm_text": ["text"],
    # translate-train and the MLM corpus
    "facebook/xnli": ["premise", "hypothesis", "label"],
    "xtreme_translate_train/tydiqa": ["id", "title", "context", "question", "answers"],
    "wikimedia/wikipedia": ["id", "url", "title", "text"],
    # XTREME-R
    "aps/super_glue/copa": ["premise", "choice1", "choice2", "question", "idx", "label"],
    "allenai/social_i_qa/default": ["context", "question", "answerA", "answerB", "answerC", "label"],
    "cambridgeltl/xcopa": ["premise", "choice1", "choice2", "question", "label", "idx", "changed"],
    "google-research-datasets/xquad_r": ["id", "context", "question", "answers"],
    "mewslix/candidate_set_entities": ["entity_id", "title", "description", "description_language",
                                       "description_url", "sentence_spans"],
    "mewslix/wikinews_mentions": ["context", "mentions"],
}
PER_LANGUAGE_CONFIGS = ("cambridgeltl/xcopa", "google-research-datasets/xquad_r", "facebook/xnli",
                        "wikimedia/wikipedia")
LAYOUT_TASKS = {t for t, s in TASKS.items() if s.get("layout", "pairs") in ("bucc2018", "mewslix")}  # own files


def read(path: Path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def schema_key(rel: Path) -> str:
    parts = rel.parent.parts
    if parts[:2] == ("google", "xtreme"):
        return "google/xtreme/" + parts[2].split(".")[0]
    if parts[0] == "xtreme_translate_train":
        return "xtreme_translate_train/" + parts[1].split(".")[0]
    if "/".join(parts[:2]) in PER_LANGUAGE_CONFIGS:
        return "/".join(parts[:2])
    if parts == ("mewslix",):
        return "mewslix/" + rel.stem.split("-")[0]
    return "/".join(parts)


def files():
    return sorted(FIXTURES.rglob("*.jsonl"))


def as_list(splits):
    return splits if isinstance(splits, list) else [splits]


def sources(task, lang):
    """(task spec, source, file path, rows after the source's filter) for every registered split of `lang`
    (tasks with a file layout of their own are checked in test_bucc.py and test_benchmark.py)."""
    spec = TASKS[task]
    if task in LAYOUT_TASKS:
        return
    name = spec.get("language_names", {}).get(lang, lang)
    for source in spec["sources"]:
        config = source.get("config", "default").format(lang=lang, name=name)
        for split in {s for v in source["splits"].values() for s in as_list(v)}:
            path = FIXTURES / source["dataset"] / config / f"{split.partition('[')[0]}.jsonl"  # train[:95%]: train
            rows = read(path) if path.exists() else None
            if rows is not None:
                for column, condition in source.get("filter", {}).items():
                    if isinstance(condition, dict):
                        prefix = condition["prefix"].format(lang=lang, name=name)
                        rows = [r for r in rows if r[column].startswith(prefix)]
                    else:
                        rows = [r for r in rows if r[column] == condition.format(lang=lang, name=name)]
            yield spec, source, path, rows


def test_every_file_parses_with_its_hub_schema():
    assert files()
    for path in files():
        rel = path.relative_to(FIXTURES)
        rows = read(path)
        assert rows, rel
        expected = SCHEMAS[schema_key(rel)]
        for row in rows:
            assert list(row) == expected, (rel, list(row))


def test_total_size_is_small():
    assert sum(p.stat().st_size for p in files()) < 3.75e6


def test_coverage_matches_the_brief():
    assert set(gen.COVERAGE) == set(TASKS)
    for task, langs in gen.COVERAGE.items():
        spec = TASKS[task]
        assert set(langs) <= set(spec["languages"]), task
        if spec["kind"] == "target":
            others = [lang for lang in langs if lang != "en"]
            assert len(others) >= 2, task
            if spec["format"] != "retrieval" and "en" in spec["languages"]:  # retrieval pairs with English
                assert "en" in langs, task
        elif spec.get("one_task_per_language"):  # translated intermediate data: the languages with fixtures
            assert all(lang != "en" for lang in langs), task
        else:
            assert langs == ["en"], task


@pytest.mark.parametrize("task", sorted(gen.COVERAGE))
def test_every_registered_split_exists(task):
    for lang in gen.COVERAGE[task]:
        for spec, source, path, rows in sources(task, lang):
            assert rows, f"{task}/{lang}: {path.relative_to(FIXTURES)} missing or empty after filtering"
            # the task's column mapping names real columns
            for value in spec["columns"].values():
                for column in as_list(value):
                    row = rows[0]
                    for part in column.split("."):
                        assert part in row, (task, column)
                        row = row[part]


@pytest.mark.parametrize("task", sorted(t for t, s in TASKS.items() if s["kind"] == "target"))
def test_parallel_languages_have_the_same_rows(task):
    counts = {}
    for lang in gen.COVERAGE[task]:
        for _, source, path, rows in sources(task, lang):
            counts.setdefault(path.name, {})[lang] = len(rows)
    for split, per_lang in counts.items():
        assert len(set(per_lang.values())) == 1, (task, split, per_lang)


def test_labels_in_range():
    for path in files():
        rel = path.relative_to(FIXTURES)
        key = schema_key(rel)
        for row in read(path):
            if key == "google/xtreme/XNLI":
                assert row["gold_label"] in gen.NLI_LABELS
            elif key == "google/xtreme/PAWS-X":
                assert row["label"] in ("0", "1")
            elif key in ("nyu-mll/glue/mnli", "facebook/anli/plain_text"):
                assert row["label"] in (0, 1, 2)
            elif key == "stanfordnlp/snli/plain_text":
                assert row["label"] in (-1, 0, 1, 2)
            elif key == "nyu-mll/glue/qqp":
                assert row["label"] in (0, 1)
            elif key == "Rowan/hellaswag/default":
                assert row["label"] in ("0", "1", "2", "3") and len(row["endings"]) == 4
                assert row["ctx"] == f"{row['ctx_a']} {row['ctx_b']}"
            elif key == "tau/commonsense_qa/default":
                assert row["choices"]["label"] == list("ABCDE") and len(row["choices"]["text"]) == 5
                assert row["answerKey"] in row["choices"]["label"]
            elif key == "allenai/cosmos_qa/default":
                assert row["label"] in (0, 1, 2, 3)
            elif key == "google/xtreme/udpos":
                assert len(row["pos_tags"]) == len(row["tokens"])
                assert all(isinstance(t, int) and 0 <= t < len(gen.UPOS_LABELS) for t in row["pos_tags"])
            elif key == "google/xtreme/PAN-X":
                assert len(row["ner_tags"]) == len(row["tokens"]) == len(row["langs"])
                assert all(isinstance(t, int) and 0 <= t < len(gen.NER_LABELS) for t in row["ner_tags"])
            elif key == "ccgbank/default":
                assert len(row["ccg_tags"]) == len(row["tokens"]) and all(row["ccg_tags"])


def test_snli_has_a_few_rows_without_gold_label():
    for split in ("train", "validation", "test"):
        labels = Counter(r["label"] for r in read(FIXTURES / f"stanfordnlp/snli/plain_text/{split}.jsonl"))
        assert 0 < labels[-1] < 0.05 * sum(labels.values())


def test_labels_are_balanced():
    for rel, column in (("google/xtreme/PAWS-X.en/train.jsonl", "label"), ("nyu-mll/glue/mnli/train.jsonl", "label"),
                        ("nyu-mll/glue/qqp/train.jsonl", "label"), ("Rowan/hellaswag/default/train.jsonl", "label"),
                        ("tau/commonsense_qa/default/train.jsonl", "answerKey"),
                        ("allenai/cosmos_qa/default/train.jsonl", "label")):
        counts = Counter(r[column] for r in read(FIXTURES / rel))
        assert max(counts.values()) - min(counts.values()) <= 1, (rel, counts)


def test_qa_offsets_are_exact():
    qa = ("google/xtreme/XQuAD", "google/xtreme/MLQA", "google/xtreme/tydiqa", "rajpurkar/squad/plain_text",
          "rajpurkar/squad_v2/squad_v2")
    seen = 0
    for path in files():
        key = schema_key(path.relative_to(FIXTURES))
        if key not in qa:
            continue
        unanswerable = 0
        for row in read(path):
            texts, starts = row["answers"]["text"], row["answers"]["answer_start"]
            assert len(texts) == len(starts)
            if not texts:
                assert key == "rajpurkar/squad_v2/squad_v2"
                unanswerable += 1
            for t, s in zip(texts, starts):
                assert t and row["context"][s:s + len(t)] == t, (path, row["id"])
                seen += 1
        if key == "rajpurkar/squad_v2/squad_v2":
            assert unanswerable > 0
    assert seen > 1000


def test_panx_tags_are_iob2():
    for path in FIXTURES.glob("google/xtreme/PAN-X.*/*.jsonl"):
        for row in read(path):
            prev = "O"
            for tag in (gen.NER_LABELS[t] for t in row["ner_tags"]):
                if tag.startswith("I-"):
                    assert prev in ("B-" + tag[2:], tag), (path, row)
                prev = tag
            assert any(t != 0 for t in row["ner_tags"])


def test_retrieval_pairs_are_distinct_and_marked():
    for path in FIXTURES.glob("google/xtreme/tatoeba.*/validation.jsonl"):
        rows = read(path)
        assert len({r["target_sentence"] for r in rows}) == len(rows)
        assert all(r["source_lang"] == path.parent.name.split(".")[1] and r["target_lang"] == "eng" for r in rows)
    for path in FIXTURES.glob("google/xtreme/bucc18.*/*.jsonl"):
        lang = path.parent.name.split(".")[1]
        rows = read(path)
        assert len({r["target_sentence"] for r in rows}) == len(rows)
        assert all(r["source_lang"].startswith(lang + "-") and r["target_lang"].startswith("en-") for r in rows)


def data_files(root: Path):
    """Every generated file (the BUCC 2018 files are not JSON lines)."""
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts}


def test_regeneration_is_byte_identical(tmp_path):
    gen.main(["--out", str(tmp_path)])
    fresh, committed = data_files(tmp_path), data_files(FIXTURES)
    assert sorted(fresh) == sorted(committed)
    for rel, data in fresh.items():
        assert committed[rel] == data, rel
