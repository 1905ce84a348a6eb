"""XTREME and XTREME-R scores of one checkpoint (`xstilts evaluate CHECKPOINT --benchmark xtreme|xtreme-r`).

A benchmark is the set of registered tasks that declare it in `benchmarks` (datamodules/tasks.yaml), each with its
fixed language list. The score is computed as XTREME's `evaluate.py` does:

* per task and metric, the mean over the task's languages (the per-language table is kept);
* a task's score is that mean of its metric; QA tasks (span_qa) enter as (mean F1 + mean EM) / 2;
* the benchmark score is the unweighted mean of the task scores (nine tasks for XTREME: XNLI, PAWS-X, UD-POS,
  PAN-X, XQuAD, MLQA, TyDiQA, BUCC, Tatoeba; ten for XTREME-R, which drops PAWS-X and BUCC and adds XCOPA, LAReQA
  and Mewsli-X, with more languages). XTREME-R is aggregated by the same rule.

XTREME's script only shows the overall score when every task is there. Here the score of what could be evaluated
is always reported, and called partial when a task is missing or a task lacks some of its languages; the missing
tasks and languages are named.

The checkpoint is evaluated on every benchmark task that needs no further training: retrieval tasks straight from
its encoder, and tasks of the format and labels of its head (an MNLI checkpoint scores XNLI; a SQuAD one XQuAD,
MLQA and TyDiQA). Each evaluation is a child MLflow run of one benchmark run, which holds the table and scores.
A task's split is test where it has one, else validation. A task declared `variant_of` a benchmark task stands in
for it when its local files are there (bucc2018_official, the BUCC files with distractors, for bucc2018).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import mean

from lightning_modules.formats import get_spec

BENCHMARKS = {"xtreme": "XTREME", "xtreme-r": "XTREME-R"}


# ---------------------------------------------------------------------------------------------- aggregation


def language_means(table: dict[str, dict[str, float]], metrics) -> dict[str, float]:
    """Per metric, the mean over the languages of `table` (lang -> metric -> value) that have it."""
    return {m: mean(row[m] for row in table.values() if m in row) for m in metrics
            if any(m in row for row in table.values())}


def task_score(table: dict[str, dict[str, float]], fmt: str, metric: str) -> float | None:
    """A task's benchmark score: the mean over languages of its metric; QA: (mean F1 + mean EM) / 2."""
    spec = get_spec(fmt)
    return spec.task_score(metric, language_means(table, spec.scored_by(metric)))


def benchmark_score(scores: dict[str, float | None]) -> tuple[float | None, list[str]]:
    """(unweighted mean of the task scores that exist, the tasks without a score)."""
    present = [s for s in scores.values() if s is not None]
    return (mean(present) if present else None), [t for t, s in scores.items() if s is None]


# ---------------------------------------------------------------------------------------------- results


@dataclass
class TaskResult:
    task: str  # the benchmark task, e.g. bucc2018
    evaluated_as: str  # the registered task that ran, e.g. bucc2018_official
    format: str
    metric: str
    split: str
    languages: list[str]  # the benchmark's fixed language list
    table: dict[str, dict[str, float]]  # language -> metric -> value, for the languages with data
    run_id: str | None = None

    @property
    def metrics(self) -> tuple[str, ...]:
        return get_spec(self.format).scored_by(self.metric)

    @property
    def missing_languages(self) -> list[str]:
        return [lang for lang in self.languages if lang not in self.table]

    @property
    def means(self) -> dict[str, float]:
        return language_means(self.table, self.metrics)

    @property
    def score(self) -> float | None:
        return task_score(self.table, self.format, self.metric)


@dataclass
class BenchmarkResult:
    name: str
    checkpoint: str
    tasks: dict[str, TaskResult] = field(default_factory=dict)  # benchmark task -> result, in benchmark order
    missing: dict[str, str] = field(default_factory=dict)  # benchmark task -> why it was not evaluated
    run_id: str | None = None

    @property
    def task_names(self) -> list[str]:
        return list(self.tasks) + [t for t in self.missing if t not in self.tasks]

    @property
    def score(self) -> float | None:
        return benchmark_score({t: r.score for t, r in self.tasks.items()})[0]

    @property
    def partial(self) -> bool:
        return bool(self.missing) or any(r.missing_languages or r.score is None for r in self.tasks.values())

    def metrics(self) -> dict[str, float]:
        """The numbers of the table, as MLflow metrics."""
        out = {}
        for task, result in self.tasks.items():
            for lang, row in result.table.items():
                out.update({f"{task}/{lang}/{m}": v for m, v in row.items() if m in result.metrics})
            out.update({f"{task}/mean/{m}": v for m, v in result.means.items()})
            if result.score is not None:
                out[f"{task}/score"] = result.score
        if self.score is not None:
            out[f"{self.name}/score"] = self.score
        out[f"{self.name}/tasks_evaluated"] = sum(r.score is not None for r in self.tasks.values())
        return out

    def to_json(self) -> dict:
        return {"benchmark": self.name, "checkpoint": self.checkpoint, "score": self.score, "partial": self.partial,
                "tasks": {t: {**asdict(r), "score": r.score, "means": r.means,
                              "missing_languages": r.missing_languages} for t, r in self.tasks.items()},
                "missing": self.missing}


# ---------------------------------------------------------------------------------------------- planning


def benchmark_tasks(registry: dict, name: str) -> list:
    """The benchmark's tasks, in registry order (variants stand in for them later)."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; valid: {', '.join(BENCHMARKS)}")
    return [t for t in registry.values() if name in t.benchmarks and t.variant_of is None]


def eval_split(task) -> str:
    return "test" if task.has_split("test") else "validation"


def _has_data(task, languages, data_path: Path | None) -> str | None:
    """None if at least one language's data can be located, else why not (no network access: hub sources pass)."""
    from datamodules.slices import slices
    from datamodules.tasks import TaskError

    split, reason = eval_split(task), None
    for lang in languages:
        try:
            slices(task, split, lang, data_path)
            if task.calibration_split:
                slices(task, task.calibration_split, lang, data_path)
            return None
        except TaskError as error:  # MissingData included
            reason = reason or str(error)
    return reason or "no languages"


def choose(task, registry: dict, languages, data_path: Path | None):
    """The task to run for benchmark task `task`: a variant whose local files are there, else the task itself."""
    if data_path is not None:
        for variant in registry.values():
            if variant.variant_of == task.name and _has_data(variant, languages, data_path) is None:
                return variant
    return task


def head_fits(task, meta: dict | None) -> str | None:
    """None if the checkpoint can be evaluated on `task` without training, else why not."""
    if not get_spec(task.format).trains:
        return None
    if meta is None:
        return f"needs a trained {task.format} head (the checkpoint is an encoder alone)"
    if meta["format"] != task.format:
        return f"needs a trained {task.format} head (the checkpoint has a {meta['format']} head)"
    if isinstance(task.labels, list) and list(meta.get("labels") or []) != task.labels:
        return f"needs a {task.format} head trained on its labels {task.labels} (the checkpoint's: {meta['labels']})"
    return None


def _checkpoint(checkpoint: str, uri: str | None) -> tuple[str, dict | None]:
    """(what to evaluate: a local checkpoint folder or an encoder name, the checkpoint's metadata or None)."""
    from lightning_modules.checkpoint import is_checkpoint, read_meta
    from sweeps.tracking.artifacts import is_tracked, local_checkpoint

    if is_tracked(checkpoint) or Path(checkpoint, "xstilts.json").exists():
        folder = local_checkpoint(checkpoint, uri)  # a runs:/ or models:/ URI is downloaded once
        if is_checkpoint(folder):
            return str(folder), read_meta(folder)
        return str(folder), None
    return checkpoint, None


# ---------------------------------------------------------------------------------------------- running


def run_benchmark(checkpoint: str, name: str, config, predictions_dir: str | None = None) -> BenchmarkResult:
    """Evaluate `checkpoint` on benchmark `name` (config: a sweeps.runs.run.RunConfig for data and tracking options);
    with `predictions_dir`, each task's XTREME submission files are written there."""
    from datamodules.tasks import TaskError, load_registry
    from sweeps.config import RunConfig
    from sweeps.runs.run import evaluate
    from sweeps.tracking.store import tracked_run, tracking_uri

    registry = load_registry(config.data.tasks_files)
    tasks = benchmark_tasks(registry, name)
    data_path = config.data.data_path()
    if data_path is not None and not data_path.is_dir():
        raise FileNotFoundError(f"--data-dir {data_path} is not a folder")
    uri = tracking_uri(config.tracking_uri)
    target, meta = _checkpoint(checkpoint, uri)
    result = BenchmarkResult(name, checkpoint)
    tags = {"xstilts.command": "benchmark", "xstilts.benchmark": name, "xstilts.checkpoint": checkpoint,
            "xstilts.checkpoint_run_id": (meta or {}).get("run_id", ""), **config.tags}
    with tracked_run(uri, config.experiment, config.run_name or f"benchmark-{name}", tags,
                     config.parent_run_id) as run:
        result.run_id = run.run_id
        run.log_params({"checkpoint": checkpoint, "benchmark": name,
                        **{f"data.{k}": v for k, v in config.data.model_dump().items()}})
        for task in tasks:
            languages = task.benchmark_languages(name)
            chosen = choose(task, registry, languages, data_path)
            why = head_fits(chosen, meta) or _has_data(chosen, languages, data_path)
            if why:
                result.missing[task.name] = why
                continue
            split = eval_split(chosen)
            child = RunConfig(task=chosen.name, encoder=config.encoder, train=config.train,
                              data=config.data.evolve(languages=(), eval_splits=(split,)),
                              tracking_uri=uri, experiment=config.experiment,
                              run_name=f"benchmark-{name}/{task.name}", parent_run_id=run.run_id,
                              tags={"xstilts.benchmark": name, "xstilts.benchmark_task": task.name})
            try:
                evaluated = evaluate(target, child, predictions_dir)
            except (TaskError, OSError) as error:  # no language had data after all; the hub out of reach
                result.missing[task.name] = f"{type(error).__name__}: {error}"
                continue
            result.tasks[task.name] = evaluate_result(task, chosen, split, languages, evaluated.scores)
            result.tasks[task.name].run_id = evaluated.run_id
        _log(run, result)
    return result


def evaluate_result(task, chosen, split: str, languages, scores: dict[str, float]) -> TaskResult:
    """The benchmark languages' rows of a run's `<split>/<lang>/<metric>` scores."""
    table = {}
    for key, value in scores.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == split and parts[1] in languages:
            table.setdefault(parts[1], {})[parts[2]] = value
    ordered = {lang: table[lang] for lang in languages if lang in table}
    return TaskResult(task.name, chosen.name, chosen.format, chosen.metric, split, list(languages), ordered)


def _log(run, result: BenchmarkResult) -> None:
    run.log_metrics(result.metrics())
    run.set_tags({"xstilts.benchmark.partial": str(result.partial).lower(),
                  "xstilts.benchmark.missing": "; ".join(f"{t}: {why}" for t, why in result.missing.items())[:5000],
                  **{f"xstilts.benchmark.task.{t}": r.evaluated_as for t, r in result.tasks.items()}})
    run.log_dict(result.to_json(), "benchmark.json")


# ---------------------------------------------------------------------------------------------- printing


def format_result(result: BenchmarkResult) -> str:
    """The per-task, per-language table and the overall score."""
    title = BENCHMARKS[result.name]
    lines = [f"{title} of {result.checkpoint}", "",
             f"{'task':<11}{'split':<12}{'language':<10}{'metric':<14}{'value':>8}"]
    for task, r in result.tasks.items():
        for lang, row in r.table.items():
            lines += [f"{task:<11}{r.split:<12}{lang:<10}{m:<14}{row[m]:>8.2f}" for m in r.metrics if m in row]
        lines += [f"{task:<11}{r.split:<12}{'mean':<10}{m:<14}{v:>8.2f}" for m, v in r.means.items()]
        note = f"{len(r.table)}/{len(r.languages)} languages" + \
            (f" (as {r.evaluated_as})" if r.evaluated_as != task else "")
        value = f"{r.score:>8.2f}" if r.score is not None else f"{'-':>8}"
        lines.append(f"{task:<11}{r.split:<12}{'score':<10}{'':<14}{value}  {note}")
    lines.append("")
    total = len(result.task_names)
    evaluated = sum(r.score is not None for r in result.tasks.values())
    score = f"{result.score:.2f}" if result.score is not None else "-"
    if result.partial:
        short = [t for t, r in result.tasks.items() if r.missing_languages]
        detail = f"{evaluated} of {total} tasks" + (f"; languages missing in {', '.join(short)}" if short else "")
        lines.append(f"{title} score: {score} (partial: {detail})")
    else:
        lines.append(f"{title} score: {score} (all {total} tasks, every language)")
    for task, why in result.missing.items():
        lines.append(f"  missing {task}: {why}")
    if result.run_id:
        lines.append(f"\nMLflow run {result.run_id}")
    return "\n".join(lines)


def dumps(result: BenchmarkResult) -> str:
    return json.dumps(result.to_json(), indent=2)
