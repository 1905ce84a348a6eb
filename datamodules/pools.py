"""Retrieval tasks whose rows are not aligned pairs: a pool of queries and candidates, one row per text.

Every pool row has the columns

    side  "source" (a query: a sentence to mine from, a question, an entity mention) or "target" (a candidate)
    id    the id the official files use (BUCC sentence id, LAReQA "<question id>_<lang>" / "<lang>_<paragraph>_<n>",
          Mewsli-X example id / WikiData QID)
    text  what is embedded
    gold  for a source row, the ids of its correct targets; [] for targets

and, when a split is scored with a threshold chosen on another split (BUCC, `calibration_split`), `part`:
"calibration" for the rows of that labelled split, "eval" for the rows scored (see `with_calibration`).

Layouts (TaskSpec.layout):

* ``bucc2018`` reads the official BUCC 2018 files ``DATA_DIR/<dataset>/<xx>-en/<xx>-en.<split>.{xx,en,gold}``
  (``id<TAB>sentence`` and ``xx_id<TAB>en_id`` lines, as the shared task's tarballs unpack), distractor sentences
  included, so mining runs over every sentence as in the shared task.
* ``mewslix`` reads the files google-research's ``get-mewsli-x.sh`` produces (and XTREME-R's
  ``download_mewslix_data.sh`` moves to ``download/mewslix/``): ``wikinews_mentions-{dev,test}.jsonl`` (one article
  with its mentions per line; the queries of a language are the mentions of its articles) and
  ``candidate_set_entities.jsonl`` (every entity is a candidate for every language). Query and candidate strings
  are built as the dataset's baseline preprocessing builds them (``preprocess_mention``,
  ``preprocess_entity_description`` in XTREME's ``third_party/utils_mewslix.py``).
* ``xquad_r`` builds LAReQA's multilingual pool from SQuAD-format rows of every language of the task: each
  paragraph is cut into sentences (its ``sentence_breaks`` when the rows carry them, as the LAReQA repository's
  JSON does; otherwise a punctuation rule, an approximation: the hub copy has no sentence breaks), every sentence
  of every language is a candidate, and a question's gold answers are the sentences holding its answer in every
  language (XTREME's ``third_party/utils_lareqa.py``). The queries of an evaluation language are its questions.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from datamodules.slices import (FILE_LAYOUTS, MEWSLIX_CANDIDATES, MissingData, apply_filter, fill, get_path,
                               load_slice, require_columns, slices)
from datamodules.tasks import TaskError, TaskSpec

POOL_COLUMNS = ("side", "id", "text", "gold")
LAYOUT_VERSION = 1  # bump when a builder's output changes (it keys the feature cache)


def is_pool(task: TaskSpec) -> bool:
    return task.format == "retrieval" and task.layout != "pairs"


# ---------------------------------------------------------------------------------------------- building datasets


def _dataset(rows: dict):
    """A datasets.Dataset of pool rows (the feature cache keys it by its files: datamodules/sources.py split_key)."""
    import datasets

    features = datasets.Features({"side": datasets.Value("string"), "id": datasets.Value("string"),
                                  "text": datasets.Value("string"), "gold": [datasets.Value("string")]})
    return datasets.Dataset.from_dict(rows, features=features)


def _rows(sources: list[tuple[str, str, list[str]]], targets: list[tuple[str, str]]) -> dict:
    return {"side": ["source"] * len(sources) + ["target"] * len(targets),
            "id": [i for i, _, _ in sources] + [i for i, _ in targets],
            "text": [t for _, t, _ in sources] + [t for _, t in targets],
            "gold": [g for _, _, g in sources] + [[] for _ in targets]}



def load_pool(task: TaskSpec, split: str, lang: str, data_dir: Path | None):
    """The pool rows of `split` of `task` for evaluation language `lang`."""
    pieces = slices(task, split, lang, data_dir)
    if task.layout == "bucc2018":
        return _bucc2018(task, pieces, lang)
    if task.layout == "mewslix":
        return _mewslix(task, pieces, lang)
    if task.layout == "xquad_r":
        return _xquad_r(task, split, lang, data_dir)
    raise TaskError(f"task {task.name!r}: layout {task.layout!r} builds no pool")


# ---------------------------------------------------------------------------------------------- BUCC 2018


def _read_tsv(path: Path, columns: int) -> list[list[str]]:
    rows = []
    with path.open(encoding="utf-8", errors="surrogateescape") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            fields = line.split("\t", columns - 1)
            if len(fields) != columns:
                raise TaskError(f"{path} line {number}: expected {columns} tab-separated fields, got {line!r}")
            rows.append([f.strip() for f in fields])
    return rows


def _bucc2018(task: TaskSpec, pieces, lang: str):
    """Every sentence of both sides (the official scripts strip each line), gold pairs on the source rows."""
    sources, targets, gold, files = [], [], {}, []
    for piece in pieces:
        src_file, tgt_file, gold_file = piece.files
        files += piece.files
        for src_id, tgt_id in _read_tsv(gold_file, 2):
            gold.setdefault(src_id, []).append(tgt_id)
        sources += _read_tsv(src_file, 2)
        targets += _read_tsv(tgt_file, 2)
    known = {i for i, _ in sources}
    unknown = sorted(set(gold) - known)
    if unknown:
        raise TaskError(f"{files[2]}: gold source id(s) {', '.join(unknown[:3])} are not in {files[0]}")
    rows = _rows([(i, text, gold.get(i, [])) for i, text in sources], [(i, text) for i, text in targets])
    return _dataset(rows)


# ---------------------------------------------------------------------------------------------- Mewsli-X

_MARKED = re.compile(r"\{(.*?)\}")


def _normalise(text: str) -> str:
    return " ".join(text.splitlines()).replace("  ", " ").strip()


def mention_query(context: dict, mention: dict) -> str:
    """Mewsli-X's baseline query string: the mention, a colon, and the one sentence holding it with the mention
    set off by braces (braces already in the text become parentheses)."""
    span = mention["mention_span"]
    start, end = span["start"], span["end"]
    for sentence in context["sentence_spans"]:
        if sentence["start"] <= start < sentence["end"] and sentence["start"] < end <= sentence["end"]:
            break
    else:
        raise TaskError(f"Mewsli-X mention {mention['example_id']}: span {start}:{end} lies in no single sentence")
    text = context["text"]
    left = _MARKED.sub(r"(\1)", text[sentence["start"]:start])
    right = _MARKED.sub(r"(\1)", text[end:sentence["end"]])
    return _normalise(f"{span['text']}: {left} {{ {span['text']} }} {right}")


def entity_text(entity: dict) -> str:
    """Mewsli-X's baseline candidate string: the description's sentences joined by spaces."""
    description = entity["description"]
    return _normalise(" ".join(description[s["start"]:s["end"]] for s in entity["sentence_spans"]))


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _mewslix(task: TaskSpec, pieces, lang: str):
    sources, files = [], []
    for piece in pieces:
        mentions_file, candidates_file = piece.files
        files += piece.files
        for article in _read_jsonl(mentions_file):
            context = article["context"]
            if context["language"] != lang:
                continue
            for mention in article["mentions"]:
                sources.append((mention["example_id"], mention_query(context, mention), [mention["entity_id"]]))
    if not sources:
        raise MissingData(f"task {task.name!r}: no {lang} mentions in {files[0]}")
    targets = [(e["entity_id"], entity_text(e)) for e in _read_jsonl(files[1])]
    return _dataset(_rows(sources, targets))


# ---------------------------------------------------------------------------------------------- LAReQA (XQuAD-R)

# A sentence ends at . ! ? (and the Arabic, Devanagari and Urdu full stops) followed by white space, or at a CJK
# full stop, question or exclamation mark.
_SENTENCE_END = re.compile(r"(?<=[.!?\u061f\u0964\u06d4])\s+|(?<=[\u3002\uff01\uff1f])\s*")


def sentence_breaks(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the sentences of `text`, white space between them excluded."""
    spans, start = [], 0
    for gap in _SENTENCE_END.finditer(text):
        if gap.start() > start:
            spans.append((start, gap.start()))
        start = gap.end()
    if len(text.rstrip()) > start:
        spans.append((start, len(text.rstrip())))
    return spans


def _squad_rows(task: TaskSpec, split: str, lang: str, data_dir: Path | None):
    """Rows with the task's canonical fields of one language, or None if it has no data."""
    rows = []
    try:
        for piece in slices(task, split, lang, data_dir):
            raw = apply_filter(load_slice(piece, streaming=False), fill(piece.source.filter, task, lang), piece)
            require_columns(raw, [column.split(".")[0] for column in task.columns.values()], piece)
            rows += [{name: get_path(row, column) for name, column in task.columns.items()} for row in raw]
    except MissingData:
        return None
    return rows


def _xquad_r(task: TaskSpec, split: str, lang: str, data_dir: Path | None):
    per_language = {}
    for other in task.languages:
        found = _squad_rows(task, split, other, data_dir)
        if found is not None:
            per_language[other] = found
    if lang not in per_language:
        raise MissingData(f"task {task.name!r}: no {split} data for language {lang!r}")
    candidates, gold, questions = [], {}, []
    for other, rows in per_language.items():
        paragraphs: dict[str, tuple[int, list]] = {}  # context -> (paragraph number, sentence spans)
        for row in rows:
            context = row["context"]
            if context not in paragraphs:
                breaks = [tuple(span) for span in row.get("sentence_breaks") or sentence_breaks(context)]
                paragraphs[context] = (len(paragraphs) + 1, breaks)
                candidates += [(f"{other}_{len(paragraphs)}_{pos}", context[start:end])
                               for pos, (start, end) in enumerate(breaks)]
            number, breaks = paragraphs[context]
            starts = row["answers"]["answer_start"]
            holding = [pos for pos, (start, end) in enumerate(breaks) if starts and start <= starts[0] < end]
            if not holding:  # as LAReQA's loader does: skip a question whose answer lies in no sentence
                continue
            gold.setdefault(row["id"], []).append(f"{other}_{number}_{holding[0]}")
            if other == lang:
                questions.append((f"{row['id']}_{lang}", row["question"], row["id"]))
    sources = [(uid, question, gold[xling]) for uid, question, xling in questions]
    return _dataset(_rows(sources, candidates))


# ---------------------------------------------------------------------------------------------- helpers


def with_calibration(examples, calibration):
    """One dataset: the calibration split's rows (part "calibration") followed by the scored split's ("eval")."""
    import datasets

    first = calibration.add_column("part", ["calibration"] * len(calibration))
    second = examples.add_column("part", ["eval"] * len(examples))
    return datasets.concatenate_datasets([first, second])


def limit_sources(rows, limit: int):
    """At most `limit` source rows, and every target (cutting candidates would change the task)."""
    sides = rows["side"]
    keep, kept = [], 0
    for index, side in enumerate(sides):
        if side != "source":
            keep.append(index)
        elif kept < limit:
            keep.append(index)
            kept += 1
    return rows.select(keep)
