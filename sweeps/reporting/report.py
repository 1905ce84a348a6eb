"""`xstilts report`: the paper's table from MLflow. Rows: intermediate task or sequence (prefixed by experiment and
encoder when a report spans several); columns: target tasks. Each cell: the zero-shot target score of the best trial
(chosen on English validation): the mean over the target's languages other than its training language (English),
mean ± standard deviation over seeds where there are several, and the difference from the no-intermediate baseline; "≈"
marks a difference smaller than the seed spread. Beside them the XTREME and XTREME-R scores over the targets present,
computed as the benchmarks define them (each task over its fixed language list, English included; QA as (F1+EM)/2;
sweeps/reporting/benchmark.py). Also per-language detail, a CSV and a heatmap, logged to the sweep's parent run."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from statistics import mean, stdev

from lightning_modules.formats import get_spec

BASELINE = "none"
BENCHMARK_TITLES = {"xtreme": "XTREME", "xtreme-r": "XTREME-R"}


def _split(metrics: dict, task) -> str | None:
    """test where the run has it, else validation."""
    for split in ("test", "validation"):
        if any(key.startswith(f"{split}/") and key.endswith(f"/{task.metric}") for key in metrics):
            return split
    return None


def language_table(metrics: dict, task, languages=None) -> dict[str, dict[str, float]]:
    """lang -> metric -> value of a run's per-language scores (test, else validation), optionally of `languages`."""
    split = _split(metrics, task)
    table: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if split and len(parts) == 3 and parts[0] == split and parts[2] in get_spec(task.format).scored_by(task.metric) \
                and "mean" not in parts[1] and (languages is None or parts[1] in languages):
            table.setdefault(parts[1], {})[parts[2]] = value
    return table


def training_language(task, registry) -> str:
    """The language a target is trained in (its training task's): the one its zero-shot score leaves out."""
    return registry[task.train_task].train_language if task.train_task else task.train_language


def task_score(metrics: dict, task, train_language: str = "en") -> float | None:
    """A target's zero-shot score: the mean over its languages other than the training language (QA: mean of F1 and
    EM), from the test split where there is one."""
    from sweeps.reporting.benchmark import task_score as aggregate

    table = language_table(metrics, task)
    table.pop(train_language, None)
    return aggregate(table, task.format, task.metric) if table else None


def benchmark_task_score(metrics: dict, task, benchmark: str) -> float | None:
    """The target's score as `benchmark` counts it: the mean over its fixed language list, English included."""
    from sweeps.reporting.benchmark import task_score as aggregate

    if benchmark not in task.benchmarks:
        return None
    table = language_table(metrics, task, task.benchmark_languages(benchmark))
    return aggregate(table, task.format, task.metric) if table else None


def target_runs(client, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ValueError(f"no MLflow experiment named {experiment!r}")
    return client.search_runs([found.experiment_id], "tags.`xstilts.phase` = 'target' and attributes.status = "
                              "'FINISHED'", max_results=50000)


def best_per_seed(runs, prefix_experiment: bool, prefix_encoder: bool) -> dict[tuple[str, str, str], object]:
    """(row prefix, intermediate, target, seed) -> the run with the best English validation score."""
    best = {}
    for run, experiment in runs:
        tags = run.data.tags
        prefix = " · ".join([experiment] * prefix_experiment + [tags.get("xstilts.encoder", "")] * prefix_encoder)
        key = (prefix, tags.get("xstilts.started_from", BASELINE), tags["xstilts.task"], tags.get("xstilts.seed", "0"))
        score = run.data.metrics.get("selection/score", float("-inf"))
        if key not in best or score > best[key].data.metrics.get("selection/score", float("-inf")):
            best[key] = run
    return best


def _label(prefix: str, intermediate: str) -> str:
    return f"{prefix} · {intermediate}" if prefix else intermediate


def build(experiments: list[str] | str, uri: str, out: Path) -> dict[str, Path]:
    import mlflow

    from datamodules.tasks import load_registry
    from sweeps.reporting.benchmark import BENCHMARKS, benchmark_tasks

    experiments = [experiments] if isinstance(experiments, str) else list(experiments)
    client = mlflow.MlflowClient(uri)
    registry = load_registry()
    runs = [(run, name) for name in experiments for run in target_runs(client, name)]
    encoders = {run.data.tags.get("xstilts.encoder") for run, _ in runs}
    best = best_per_seed(runs, len(experiments) > 1, len(encoders) > 1)
    samples: dict[tuple[str, str], list[float]] = defaultdict(list)  # (row, target) -> one score per seed
    benchmark_samples = {name: defaultdict(list) for name in BENCHMARKS}  # the same, as each benchmark counts it
    rows_of_prefix: dict[str, str] = {}
    for (prefix, intermediate, target, _), run in sorted(best.items()):
        task, row = registry[target], _label(prefix, intermediate)
        value = task_score(run.data.metrics, task, training_language(task, registry))
        if value is not None:
            samples[(row, target)].append(value)
        for name in BENCHMARKS:
            value = benchmark_task_score(run.data.metrics, task, name)
            if value is not None:
                benchmark_samples[name][(row, target)].append(value)
        rows_of_prefix[row] = _label(prefix, BASELINE)
    table = Table(samples, rows_of_prefix, benchmark_samples,
                  {name: [t.name for t in benchmark_tasks(registry, name)] for name in BENCHMARKS})
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "report.md", "csv": out / "report.csv", "heatmap": out / "heatmap.png"}
    paths["markdown"].write_text(table.markdown(", ".join(experiments), best, registry))
    table.write_csv(paths["csv"])
    table.heatmap(paths["heatmap"])
    log_to_sweeps(client, experiments, paths.values())
    return paths


def log_to_sweeps(client, experiments: list[str], paths) -> None:
    """The report's files, as artifacts (report/) of each experiment's sweep run."""
    paths = list(paths)
    for name in experiments:
        parent = client.search_runs([client.get_experiment_by_name(name).experiment_id],
                                    "tags.`xstilts.kind` = 'sweep'", max_results=1)
        for path in paths if parent else ():
            client.log_artifact(parent[0].info.run_id, str(path), "report")


class Table:
    def __init__(self, samples: dict, baseline_of: dict[str, str], benchmark_samples: dict | None = None,
                 benchmark_tasks: dict[str, list[str]] | None = None):
        self.samples, self.baseline_of = samples, baseline_of
        self.benchmark_samples, self.benchmark_tasks = benchmark_samples or {}, benchmark_tasks or {}
        self.rows = sorted(baseline_of, key=lambda r: (baseline_of[r], r != baseline_of[r], r))
        self.targets = sorted({target for _, target in samples})

    def value(self, row: str, target: str) -> float | None:
        values = self.samples.get((row, target))
        return mean(values) if values else None

    def spread(self, row: str, target: str) -> float:
        values = self.samples.get((row, target), [])
        return stdev(values) if len(values) > 1 else 0.0

    def delta(self, row: str, target: str) -> float | None:
        base = self.baseline_of[row]
        value, reference = self.value(row, target), self.value(base, target)
        return None if row == base or value is None or reference is None else value - reference

    def within_noise(self, row: str, target: str) -> bool:
        change = self.delta(row, target)
        noise = max(self.spread(row, target), self.spread(self.baseline_of[row], target))
        return change is not None and noise > 0 and abs(change) < noise

    def benchmark_targets(self, benchmark: str) -> list[str]:
        """The benchmark's tasks among the report's targets."""
        return [t for t in self.benchmark_tasks.get(benchmark, []) if any(
            target == t for _, target in self.benchmark_samples.get(benchmark, {}))]

    def overall(self, row: str, benchmark: str) -> float | None:
        """The benchmark score over its tasks present (the unweighted mean of their scores, over seeds)."""
        targets = self.benchmark_targets(benchmark)
        values = [self.benchmark_samples[benchmark].get((row, t)) for t in targets]
        return None if not targets or not all(values) else mean(mean(v) for v in values)

    def overall_cell(self, row: str, benchmark: str) -> str:
        overall, base = self.overall(row, benchmark), self.overall(self.baseline_of[row], benchmark)
        if overall is None:
            return "–"
        change = "" if base is None or row == self.baseline_of[row] else f" ({overall - base:+.1f})"
        return f"{overall:.1f}{change}"

    def cell(self, row: str, target: str) -> str:
        value = self.value(row, target)
        if value is None:
            return "–"
        text = f"{value:.1f}" + (f" ± {self.spread(row, target):.1f}" if len(self.samples[(row, target)]) > 1 else "")
        change = self.delta(row, target)
        if change is not None:
            text += f" ({change:+.1f}{' ≈' if self.within_noise(row, target) else ''})"
        return text

    def markdown(self, title: str, best, registry) -> str:
        lines = [f"# xstilts report: {title}", "",
                 "Zero-shot score per target (mean over its languages; QA: (F1+EM)/2) of the best trial by English "
                 "validation; mean ± std over seeds where there are several; in brackets the difference from no "
                 "intermediate task, marked ≈ when smaller than the seed spread.", "",
                 "| intermediate | " + " | ".join(self.targets) + " | "
                 + " | ".join(self._benchmark_header(name) for name in BENCHMARK_TITLES) + " |",
                 "|---" * (len(self.targets) + 1 + len(BENCHMARK_TITLES)) + "|"]
        for row in self.rows:
            lines.append(f"| {row} | " + " | ".join(self.cell(row, t) for t in self.targets) + " | "
                         + " | ".join(self.overall_cell(row, name) for name in BENCHMARK_TITLES) + " |")
        lines += ["", "Zero-shot: the mean over a target's languages other than English. XTREME / XTREME-R: each "
                  "task's score over the benchmark's own language list, English included (QA: (F1+EM)/2), averaged "
                  "over the benchmark's tasks among these targets; partial unless every task is there."]
        lines += self._languages(best, registry)
        return "\n".join(lines) + "\n"

    def _benchmark_header(self, name: str) -> str:
        present, total = len(self.benchmark_targets(name)), len(self.benchmark_tasks.get(name, []))
        partial = "" if present == total else f" (partial: {present} of {total} tasks)"
        return f"{BENCHMARK_TITLES[name]} score{partial}"

    def _languages(self, best, registry) -> list[str]:
        lines = []
        for target in self.targets:
            metric = registry[target].metric
            runs = {(_label(p, i), s): r for (p, i, t, s), r in sorted(best.items()) if t == target}
            keys = {k for r in runs.values() for k in r.data.metrics}
            split = "test" if any(k.startswith("test/") for k in keys) else "validation"
            languages = sorted({k.split("/")[1] for k in keys if k.startswith(f"{split}/") and k.endswith(f"/{metric}")
                                and "mean" not in k})
            lines += ["", f"## {target}: {split} {metric} per language", "",
                      "| intermediate | seed | " + " | ".join(languages) + " |", "|---" * (len(languages) + 2) + "|"]
            for (row, seed), run in runs.items():
                values = [run.data.metrics.get(f"{split}/{lang}/{metric}") for lang in languages]
                lines.append(f"| {row} | {seed} | " + " | ".join("–" if v is None else f"{v:.1f}" for v in values)
                             + " |")
        return lines

    def write_csv(self, path: Path) -> None:
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["row", "target", "mean", "std", "seeds", "delta_vs_none", "within_seed_spread"])
            for row in self.rows:
                for target in self.targets:
                    if (row, target) in self.samples:
                        writer.writerow([row, target, self.value(row, target), self.spread(row, target),
                                         len(self.samples[(row, target)]), self.delta(row, target),
                                         self.within_noise(row, target)])
                for name, title in BENCHMARK_TITLES.items():
                    overall, base = self.overall(row, name), self.overall(self.baseline_of[row], name)
                    if overall is not None:
                        change = None if base is None or row == self.baseline_of[row] else overall - base
                        writer.writerow([row, f"{title} score", overall, "", "", change, ""])

    def heatmap(self, path: Path) -> None:
        figure = self.heatmap_figure()  # it chooses matplotlib's backend, before pyplot is imported here
        import matplotlib.pyplot as plt

        figure.savefig(path, dpi=120)
        plt.close(figure)

    def heatmap_figure(self):
        """Readable at any grid size: the figure grows with the grid and its longest labels, column labels are
        rotated, the title wraps to the figure's width, and the layout keeps every label and the title inside."""
        import textwrap

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np

        grid = np.array([[np.nan if self.delta(r, t) is None else self.delta(r, t) for t in self.targets]
                         for r in self.rows])
        inch = 0.11  # inches per label character at the 9-point font below
        row_labels = max(map(len, self.rows), default=1) * inch
        column_labels = max(map(len, self.targets), default=1) * inch * 0.75  # rotated 45 degrees
        width = max(0.8 * len(self.targets) + row_labels + 2.5, 6.0)
        height = 0.5 * len(self.rows) + column_labels + 2.0
        figure, axes = plt.subplots(figsize=(width, height), layout="constrained")
        # the colour scale spans at least one point either way: a tenth of a point is not painted as a large change
        limit = max(float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0, 1.0)
        image = axes.imshow(grid, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
        axes.set_xticks(range(len(self.targets)), self.targets, rotation=45, ha="right", rotation_mode="anchor",
                        fontsize=9)
        axes.set_yticks(range(len(self.rows)), self.rows, fontsize=9)
        for (row, column), value in np.ndenumerate(grid):
            if np.isfinite(value):
                axes.text(column, row, f"{value:+.1f}", ha="center", va="center", fontsize=8)
        figure.colorbar(image, label="difference from no intermediate task", shrink=min(1.0, 0.3 + 0.1 *
                                                                                         len(self.rows)))
        title = "Zero-shot transfer: change from intermediate-task training (target score minus its score without an " \
                "intermediate task)"
        axes.set_title("\n".join(textwrap.wrap(title, max(int(width * 9), 30))), fontsize=10)
        return figure
