"""`xstilts score PREDICTIONS --gold DATA`: score a folder of predictions per task and language with the metric code
runs use, and aggregate the XTREME and XTREME-R scores (sweeps/reporting/benchmark.py).

PREDICTIONS is either
* xstilts' own tables (a run's `predictions` artifacts, `<task>/<split>/<lang>.parquet`, or `runs:/<run id>`):
  every split and language is scored by the format's `score_predictions`, which gives exactly the run's logged
  metrics; with `--gold`, the gold of each record (labels, tags, answers) is first replaced by the data's; or
* the official submission layout (`<task>/test-<lang>.<suffix>`, sweeps/reporting/submission.py), scored like
  google-research/xtreme's evaluate.py against `--gold`: a folder of official label files in the same layout, or
  the data itself (a `--data-dir` folder in the hub layout, `fixtures`, or the hub when omitted).
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sweeps.reporting import submission

OFFICIAL_FILE = re.compile(r"^test-(?P<lang>[A-Za-z_-]+)\.(?P<suffix>tsv|json|jsonl)$")


@dataclass
class Scored:
    task: str
    split: str
    lang: str
    scores: dict[str, float]
    source: str  # "table" or "official"


# ---------------------------------------------------------------------------------------------- gold from data


def _data_path(gold: str | None) -> Path | None:
    """A data folder named as --data-dir names one ('fixtures': the bundled fixtures)."""
    from sweeps.config import DataConfig

    return DataConfig(data_dir=gold).data_path() if gold else None


def _labels(task, data_path) -> list[str] | None:
    from datamodules.sources import collect_labels

    if task.labels == "from_data":
        return collect_labels(task, data_path)
    return task.labels if isinstance(task.labels, list) else None


def gold_examples(task, split: str, lang: str, data_path: Path | None):
    from datamodules.sources import load_split

    return load_split(task, split, lang, data_path, label_names=_labels(task, data_path))


def gold_from_data(task, split: str, lang: str, data_path: Path | None):
    """The gold of one language in the representation submission.read gives for a label file."""
    examples = gold_examples(task, split, lang, data_path)
    labels = _labels(task, data_path)
    if task.format in ("classification", "multiple_choice"):
        return [labels[i] if labels else str(i) for i in examples["label"]]
    if task.format == "tagging":
        return [[labels[t] for t in tags] for tags in examples["tags"]]
    if task.format == "span_qa":
        return {qid: list(answers["text"]) for qid, answers in zip(examples["id"], examples["answers"])}
    if "side" in examples.column_names:  # a pool: gold pairs, or each query's gold candidates
        rows = [(str(i), [str(g) for g in gold]) for side, i, gold in
                zip(examples["side"], examples["id"], examples["gold"]) if side == "source"]
        if task.metric == "map_at_20":
            return {query: gold for query, gold in rows if gold}
        return [(query, target) for query, gold in rows for target in gold]
    if task.metric == "f1":  # aligned pairs: row i with row i
        return [(str(i), str(i)) for i in range(len(examples))]
    return [str(i) for i in range(len(examples))]  # Tatoeba: each English sentence's own line


# ---------------------------------------------------------------------------------------------- official files


def score_official(task, lang: str, predicted, gold) -> dict[str, float]:
    """evaluate.py's metric of one task and language, with xstilts' metric functions."""
    from lightning_modules.formats.span_qa import answer_scores
    from lightning_modules.metrics.classification import accuracy
    from lightning_modules.metrics.retrieval import average_precision_at_k, bucc_scores
    from lightning_modules.metrics.tagging import tag_scores, token_accuracy

    if task.format == "tagging":
        return token_accuracy(gold, predicted) if task.metric == "accuracy" else \
            tag_scores(gold, predicted, task.seqeval)
    if task.format == "span_qa":
        return answer_scores(predicted, gold, task, lang)
    if task.format == "retrieval" and task.metric == "f1":
        return bucc_scores([(s, t, 0.0) for s, t in predicted], gold, 0.0)
    if task.format == "retrieval" and task.metric == "map_at_20":
        return {"map_at_20": 100.0 * sum(average_precision_at_k(g, predicted.get(q, []), 20)
                                         for q, g in gold.items()) / len(gold)}
    return accuracy(gold, predicted)


def _official_files(folder: Path) -> dict[tuple[str, str], Path]:
    found = {}
    for path in sorted(folder.glob("*/test-*")):
        match = OFFICIAL_FILE.match(path.name)
        if match:
            found[(path.parent.name, match["lang"])] = path
    return found


def _task_for(name: str, registry: dict, lang: str, data_path: Path | None, predicted):
    """The registered task a file of `name` is scored as: BUCC pairs named by sentence ids (not row numbers) can
    only come from the official files, so they are scored against its variant that reads them (bucc2018_official)
    where that variant has this language's files."""
    from sweeps.reporting.benchmark import _has_data

    task = registry[name]
    if task.format == "retrieval" and task.metric == "f1" and data_path is not None and \
            not all(s.isdigit() and t.isdigit() for s, t in predicted):
        for variant in registry.values():
            if variant.variant_of == name and _has_data(variant, [lang], data_path) is None:
                return variant
    return task


def score_official_folder(folder: Path, gold: str | None, registry: dict) -> list[Scored]:
    files = _official_files(folder)
    label_folder = Path(gold) if gold is not None and gold != "fixtures" else None
    data_path = _data_path(gold)
    results = []
    for name in sorted({name for name, _ in files}):
        if name not in registry:
            raise ValueError(f"predictions for {name!r}, which is not a registered task")
        for lang in [lang for task_name, lang in files if task_name == name]:
            predicted = submission.read(files[(name, lang)], registry[name])
            task = _task_for(name, registry, lang, data_path, predicted)
            split = submission.submission_split(task)
            label_file = label_folder / name / files[(name, lang)].name if label_folder else None
            if label_file is not None and label_file.is_file():
                expected = submission.read(label_file, task, labels=True)
            else:
                expected = gold_from_data(task, split, lang, data_path)
            results.append(Scored(name, split, lang, score_official(task, lang, predicted, expected), "official"))
    return results


# ---------------------------------------------------------------------------------------------- xstilts' tables


def regold(task, records: list[dict], examples, labels) -> list[dict]:
    """Records whose gold is the data's (classification, multiple choice, tagging, span QA; the others keep
    theirs), matched by example index, or question id for QA."""
    if task.format == "span_qa":
        answers = {qid: list(a["text"]) for qid, a in zip(examples["id"], examples["answers"])}
        return [{**r, "gold": answers[r["id"]]} for r in records]
    if task.format in ("classification", "multiple_choice"):
        gold = examples["label"]
        return [{**r, "gold": labels[gold[r["index"]]] if labels else str(gold[r["index"]])} for r in records]
    if task.format == "tagging":
        tags = examples["tags"]
        return [{**r, "gold": [labels[t] for t in tags[r["index"]]]} for r in records]
    return records


def score_tables(folder: Path, gold: str | None, registry: dict) -> list[Scored]:
    from lightning_modules.formats import get_format
    from lightning_modules.predictions import find_tables, read_table

    data_path = _data_path(gold)
    results = []
    for (name, split, lang), path in find_tables(folder).items():
        if name not in registry:
            raise ValueError(f"{path}: task {name!r} is not registered (pass its --tasks-file)")
        task = registry[name]
        records = read_table(path)
        if gold is not None and "." not in split:  # perturbed and adversarial sets are not in the data as such
            records = regold(task, records, gold_examples(task, split, lang, data_path), _labels(task, data_path))
        scores = get_format(task.format).score_predictions(records, task, lang)
        results.append(Scored(name, split, lang, scores, "table"))
    return results


# ---------------------------------------------------------------------------------------------- both


def _download(uri: str, tracking: str | None, into: str) -> Path:
    import mlflow

    from sweeps.tracking.store import tracking_uri

    mlflow.set_tracking_uri(tracking_uri(tracking))
    run_id = uri.removeprefix("runs:/").split("/")[0]
    return Path(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/predictions", dst_path=into))


def score(predictions: str, gold: str | None = None, tasks_files=(), tracking: str | None = None,
          seqeval: str | None = None) -> list[Scored]:
    """Every task, split and language of a predictions folder (or `runs:/<run id>`), scored."""
    from dataclasses import replace

    from datamodules.tasks import load_registry

    registry = load_registry(tasks_files)
    if seqeval:
        registry = {name: replace(task, seqeval=seqeval) for name, task in registry.items()}
    with tempfile.TemporaryDirectory(prefix="xstilts-score-") as tmp:
        folder = _download(predictions, tracking, tmp) if predictions.startswith("runs:/") else Path(predictions)
        if not folder.is_dir():
            raise FileNotFoundError(f"predictions folder {predictions} does not exist")
        results = score_tables(folder, gold, registry) + score_official_folder(folder, gold, registry)
    if not results:
        raise FileNotFoundError(f"{predictions} holds no predictions: neither <task>/<split>/<lang>.parquet tables "
                                f"nor official <task>/test-<lang>.<tsv|json|jsonl> files")
    return results


def benchmarks(results: list[Scored], registry: dict, source: str = "predictions") -> list:
    """The XTREME and XTREME-R results (sweeps/reporting/benchmark.py) over the scored submission splits."""
    from sweeps.reporting.benchmark import BENCHMARKS, BenchmarkResult, TaskResult, benchmark_tasks

    out = []
    for name in BENCHMARKS:
        result = BenchmarkResult(name, source)
        for task in benchmark_tasks(registry, name):
            languages = task.benchmark_languages(name)
            rows = [r for r in results if r.lang in languages and r.task in registry
                    and submission.benchmark_name(registry[r.task]) == task.name
                    and r.split == submission.submission_split(registry[r.task])]
            if not rows:
                result.missing[task.name] = "no predictions"
                continue
            table = {lang: next(r.scores for r in rows if r.lang == lang) for lang in languages
                     if any(r.lang == lang for r in rows)}
            result.tasks[task.name] = TaskResult(task.name, task.name, task.format, task.metric, rows[0].split,
                                                 languages, table)
        out.append(result)
    return out


def format_scores(results: list[Scored]) -> str:
    lines = [f"{'task':<18}{'split':<18}{'language':<10}{'metric':<24}{'value':>10}"]
    for r in results:
        lines += [f"{r.task:<18}{r.split:<18}{r.lang:<10}{metric:<24}{value:>10.4f}"
                  for metric, value in r.scores.items()]
    return "\n".join(lines)
