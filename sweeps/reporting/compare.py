"""`xstilts compare RUN_A RUN_B`: two runs' predictions side by side, from their prediction tables
(lightning_modules/predictions.py). Per task, split and language: both scores and their difference (B − A), how
many examples the two predict differently, and how many of those only A or only B gets right; then the examples
they disagree on. The terminal shows a few per language; the full tables are logged to a `compare` MLflow run
(compare/<task>/<split>/<lang>.parquet, with summary.json).

Examples are matched by question id (span QA), query id (LAReQA, Mewsli-X), the candidate pair (BUCC: a pair one run
never mined counts as not predicted by it) or the example's position (everything else).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Comparison:
    task: str
    split: str
    lang: str
    scores_a: dict[str, float]
    scores_b: dict[str, float]
    disagreements: list[dict] = field(default_factory=list)
    examples: int = 0

    @property
    def key(self) -> str:
        return f"{self.task}/{self.split}/{self.lang}"

    def difference(self) -> dict[str, float]:
        return {m: self.scores_b[m] - self.scores_a[m] for m in self.scores_a if m in self.scores_b}

    def only(self, side: str) -> int:
        other = "b" if side == "a" else "a"
        return sum(bool(r[f"correct_{side}"]) and not r[f"correct_{other}"] for r in self.disagreements)


def example_key(record: dict):
    if "id" in record:
        return record["id"]
    if "query_id" in record:
        return record["query_id"]
    if "source_id" in record:
        return (record["part"], record["source_id"], record["target_id"])
    return record["index"]


def _shown(value):
    return " ".join(map(str, value)) if isinstance(value, list) else value


def compare_records(records_a: list[dict], records_b: list[dict]) -> tuple[list[dict], int]:
    """(the examples whose predictions differ, as rows with both predictions; the number of examples compared)."""
    a = {example_key(r): r for r in records_a}
    b = {example_key(r): r for r in records_b}
    keys = list(a) + [k for k in b if k not in a]
    rows = []
    for key in keys:
        left, right = a.get(key), b.get(key)
        shown = left or right
        prediction_a = left["prediction"] if left else None
        prediction_b = right["prediction"] if right else None
        if prediction_a == prediction_b:
            continue
        rows.append({"example": str(key), "input": _shown(shown.get("input")), "gold": _shown(shown.get("gold")),
                     "prediction_a": _shown(prediction_a), "prediction_b": _shown(prediction_b),
                     "correct_a": bool(left and left["correct"]), "correct_b": bool(right and right["correct"])})
    return rows, len(keys)


def _tables(run_id: str, client, into: Path) -> dict:
    from lightning_modules.predictions import ROOT, find_tables

    local = client.download_artifacts(run_id, ROOT, str(into))
    return find_tables(local)


def compare(run_a: str, run_b: str, uri: str, tasks_files=()) -> list[Comparison]:
    import mlflow

    from datamodules.tasks import load_registry
    from lightning_modules.formats import get_format
    from lightning_modules.predictions import read_table

    registry = load_registry(tasks_files)
    client = mlflow.MlflowClient(uri)
    with tempfile.TemporaryDirectory(prefix="xstilts-compare-") as tmp:
        tables_a = _tables(run_a, client, Path(tmp) / "a")
        tables_b = _tables(run_b, client, Path(tmp) / "b")
        shared = [key for key in tables_a if key in tables_b]
        if not shared:
            raise ValueError(f"runs {run_a} and {run_b} have no task, split and language in common "
                             f"({len(tables_a)} and {len(tables_b)} prediction tables)")
        results = []
        for task_name, split, lang in shared:
            task = registry[task_name]
            fmt = get_format(task.format)
            a, b = read_table(tables_a[(task_name, split, lang)]), read_table(tables_b[(task_name, split, lang)])
            rows, examples = compare_records(a, b)
            results.append(Comparison(task_name, split, lang, fmt.score_predictions(a, task, lang),
                                      fmt.score_predictions(b, task, lang), rows, examples))
    return results


def summary(results: list[Comparison]) -> list[dict]:
    return [{"task": c.task, "split": c.split, "language": c.lang, "examples": c.examples,
             "disagreements": len(c.disagreements), "only_a_right": c.only("a"), "only_b_right": c.only("b"),
             **{f"a/{m}": v for m, v in c.scores_a.items()}, **{f"b/{m}": v for m, v in c.scores_b.items()},
             **{f"difference/{m}": v for m, v in c.difference().items()}} for c in results]


def format_comparison(results: list[Comparison], metric_of: dict[str, tuple[str, ...]], shown: int = 5,
                      width: int = 48) -> str:
    """The per-language table, then up to `shown` disagreements per language."""
    lines = [f"{'task/split/language':<34}{'metric':<14}{'A':>9}{'B':>9}{'B − A':>9}{'differ':>8}{'A only':>8}"
             f"{'B only':>8}"]
    for c in results:
        for metric in metric_of[c.task]:
            if metric in c.scores_a and metric in c.scores_b:
                lines.append(f"{c.key:<34}{metric:<14}{c.scores_a[metric]:>9.2f}{c.scores_b[metric]:>9.2f}"
                             f"{c.difference()[metric]:>+9.2f}{len(c.disagreements):>8}{c.only('a'):>8}"
                             f"{c.only('b'):>8}")
    for c in results:
        if not c.disagreements or shown <= 0:
            continue
        lines += ["", f"{c.key}: {len(c.disagreements)} of {c.examples} examples differ"
                  + (f" (first {shown})" if len(c.disagreements) > shown else "")]
        for row in c.disagreements[:shown]:
            cut = lambda value: str(value)[:width]  # noqa: E731
            lines.append(f"  {cut(row['input'])!r}  gold {cut(row['gold'])!r}  A {cut(row['prediction_a'])!r}"
                         f"{' ✓' if row['correct_a'] else ''}  B {cut(row['prediction_b'])!r}"
                         f"{' ✓' if row['correct_b'] else ''}")
    return "\n".join(lines)


def log(results: list[Comparison], run_a: str, run_b: str, uri: str, experiment: str) -> str:
    """A `compare` MLflow run holding the full disagreement tables and the summary; its id."""
    from lightning_modules.predictions import to_frame
    from sweeps.tracking.store import tracked_run

    tags = {"xstilts.command": "compare", "xstilts.compare.a": run_a, "xstilts.compare.b": run_b}
    with tracked_run(uri, experiment, f"compare-{run_a[:8]}-{run_b[:8]}", tags) as run:
        with run.tables() as tables:
            for c in results:
                if c.disagreements:
                    tables.add(to_frame(c.disagreements), f"compare/{c.key}.parquet")
        run.log_metrics({f"{c.key}/difference/{m}": v for c in results for m, v in c.difference().items()})
        run.log_dict({"a": run_a, "b": run_b, "languages": summary(results)}, "compare/summary.json")
        return run.run_id


def run_id_of(reference: str) -> str:
    """A run id from `runs:/<id>/...` or the id itself."""
    return reference.removeprefix("runs:/").split("/")[0]
