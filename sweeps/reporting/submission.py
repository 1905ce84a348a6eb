"""XTREME / XTREME-R submission files: the layout and formats google-research/xtreme's `evaluate.py` reads
(its `READER_FUNCTION`, `get_suffix` and `evaluate`, with `third_party/evaluate_squad.py`,
`third_party/evaluate_mlqa.py` and `third_party/utils_mewslix.py` for the QA and Mewsli-X files).

One file per task and language, `<folder>/<task>/test-<lang>.<suffix>`, from the task's test split (its
validation split where it has no test split: XQuAD, TyDiQA-GoldP, Tatoeba, whose XTREME "test" sets they are):

* xnli, pawsx: `.tsv`, the predicted label of each example, one per line;
* panx, udpos: `.tsv`, one tag per line, a blank line after each sentence;
* xquad, mlqa, tydiqa: `.json`, {question id: answer text};
* bucc2018: `.tsv`, the mined pairs `<source id>\\t<target id>` at or above the threshold chosen on the dev
  ("sample") split;
* tatoeba: `.tsv`, per English sentence, the line number of the sentence it retrieved;
* mewslix: `.json`, {mention id: the 20 best entity ids};
* xcopa: `.jsonl`, one {"idx", "label"} per example (`read_xcopa` reads `label`).

LAReQA has no file: XTREME-R's evaluate.py lists no languages for it. A variant (bucc2018_official) writes under
the task it stands for (bucc2018). The same readers give back predictions and labels in this layout for
`xstilts score`.
"""

from __future__ import annotations

import json
from pathlib import Path

SUFFIXES = {"span_qa": "json", "multiple_choice": "jsonl"}
NO_FILES = ("lareqa",)


def benchmark_name(task) -> str:
    return task.variant_of or task.name


def submission_split(task) -> str:
    return "test" if task.has_split("test") else "validation"


def suffix(task) -> str:
    if task.format == "retrieval" and task.metric == "map_at_20":
        return "json"
    return SUFFIXES.get(task.format, "tsv")


def submission_file(folder: str | Path, task, lang: str) -> Path:
    return Path(folder) / benchmark_name(task) / f"test-{lang}.{suffix(task)}"


def write(folder: str | Path, task, lang: str, records: list[dict]) -> Path | None:
    """Write one language's predictions of `task` (a format's records) as the official file; None if the task has
    no submission file."""
    if benchmark_name(task) in NO_FILES:
        return None
    path = submission_file(folder, task, lang)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        if task.format == "span_qa":
            json.dump({r["id"]: r["prediction"] for r in records}, handle, ensure_ascii=False)
        elif task.format == "multiple_choice":
            for r in records:
                handle.write(json.dumps({"idx": r["index"], "label": _label_value(r["prediction"])}) + "\n")
        elif task.format == "tagging":
            for r in records:
                handle.writelines(f"{tag}\n" for tag in r["prediction"])
                handle.write("\n")
        elif task.format == "retrieval" and task.metric == "map_at_20":
            json.dump({r["query_id"]: r["prediction"] for r in records}, handle, ensure_ascii=False)
        elif task.format == "retrieval" and task.metric == "f1":
            handle.writelines(f"{r['source_id']}\t{r['target_id']}\n" for r in records
                              if r["part"] == "eval" and r["prediction"])
        else:  # classification labels, Tatoeba line numbers
            handle.writelines(f"{r['prediction']}\n" for r in records)
    return path


def _label_value(label):
    return int(label) if isinstance(label, str) and label.isdigit() else label


# ---------------------------------------------------------------------------------------------- reading


def read_lines(path: Path) -> list[str]:
    """evaluate.py's read_label: every line, stripped."""
    with path.open(encoding="utf-8") as handle:
        return [line.strip() for line in handle]


def read_tags(path: Path) -> list[list[str]]:
    """evaluate.py's read_tag: sentences of stripped lines, split at blank lines."""
    sentences, sentence = [], []
    for line in read_lines(path):
        if line:
            sentence.append(line)
        else:
            sentences.append(sentence)
            sentence = []
    if sentence:
        sentences.append(sentence)
    return sentences


def read_json(path: Path):
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


def read_jsonl(path: Path) -> list:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def squad_references(dataset) -> dict[str, list[str]]:
    """question id -> gold answer texts of a SQuAD-format file (`data` or the bare list, as read_squad)."""
    articles = dataset["data"] if isinstance(dataset, dict) and "data" in dataset else dataset
    return {qa["id"]: [answer["text"] for answer in qa["answers"]]
            for article in articles for paragraph in article["paragraphs"] for qa in paragraph["qas"]}


def read(path: Path, task, labels: bool = False):
    """The contents of one file in this layout: labels (gold) or predictions, per the task's format."""
    if task.format == "tagging":
        return read_tags(path)
    if task.format == "span_qa":
        data = read_json(path)
        return squad_references(data) if labels else data
    if task.format == "multiple_choice":
        return [str(row["label"]) for row in read_jsonl(path)]
    if task.format == "retrieval" and task.metric == "map_at_20":
        return read_json(path)
    if task.format == "retrieval" and task.metric == "f1":
        return [tuple(line.split("\t")) for line in read_lines(path) if line]
    return read_lines(path)


# ---------------------------------------------------------------------------------------------- from a run


def write_from_run(client, run_id: str, task, folder: str | Path) -> list[Path]:
    """The submission files of a finished run (a promoted champion), from its prediction tables."""
    import tempfile

    from lightning_modules.predictions import find_tables, read_table, table_path

    split, written = submission_split(task), []
    with tempfile.TemporaryDirectory(prefix="xstilts-predictions-") as tmp:
        local = client.download_artifacts(run_id, str(Path(table_path(task.name, split, "x")).parent), tmp)
        for (_, table_split, lang), path in find_tables(Path(local).parent.parent).items():
            if table_split == split:
                path = write(folder, task, lang, read_table(path))
                written += [path] if path else []
    return written
