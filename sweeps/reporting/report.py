"""`xstilts report`: the paper's table from MLflow. Rows: intermediate task or sequence (prefixed by experiment and
encoder when a report spans several); columns: target tasks. Each cell: the zero-shot target score of the best trial
(chosen on English validation), mean ± standard deviation over seeds where there are several, and the difference from
the no-intermediate baseline; "≈" marks a difference smaller than the seed spread. Also the XTREME score over the
targets present, per-language detail, a CSV and a heatmap, logged to the sweep's parent run."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from statistics import mean, stdev

from lightning_modules.formats import get_spec

BASELINE = "none"


def task_score(metrics: dict, task) -> float | None:
    """A target's score as XTREME aggregates it (QA: mean of F1 and EM), from the test split where there is one."""
    spec = get_spec(task.format)
    for split in ("test", "validation"):
        score = spec.task_score(task.metric, {m: metrics[f"{split}/mean/{m}"] for m in spec.scored_by(task.metric)
                                              if f"{split}/mean/{m}" in metrics})
        if score is not None:
            return score
    return None


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

    experiments = [experiments] if isinstance(experiments, str) else list(experiments)
    client = mlflow.MlflowClient(uri)
    registry = load_registry()
    runs = [(run, name) for name in experiments for run in target_runs(client, name)]
    encoders = {run.data.tags.get("xstilts.encoder") for run, _ in runs}
    best = best_per_seed(runs, len(experiments) > 1, len(encoders) > 1)
    samples: dict[tuple[str, str], list[float]] = defaultdict(list)  # (row, target) -> one score per seed
    rows_of_prefix: dict[str, str] = {}
    for (prefix, intermediate, target, _), run in sorted(best.items()):
        value = task_score(run.data.metrics, registry[target])
        if value is not None:
            samples[(_label(prefix, intermediate), target)].append(value)
        rows_of_prefix[_label(prefix, intermediate)] = _label(prefix, BASELINE)
    table = Table(samples, rows_of_prefix)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "report.md", "csv": out / "report.csv", "heatmap": out / "heatmap.png"}
    paths["markdown"].write_text(table.markdown(", ".join(experiments), best, registry))
    table.write_csv(paths["csv"])
    table.heatmap(paths["heatmap"])
    for name in experiments:
        parent = client.search_runs([client.get_experiment_by_name(name).experiment_id],
                                    "tags.`xstilts.kind` = 'sweep'", max_results=1)
        for path in paths.values():
            if parent:
                client.log_artifact(parent[0].info.run_id, str(path), "report")
    return paths


class Table:
    def __init__(self, samples: dict, baseline_of: dict[str, str]):
        self.samples, self.baseline_of = samples, baseline_of
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

    def overall(self, row: str) -> float | None:
        values = [self.value(row, t) for t in self.targets]
        return None if any(v is None for v in values) else mean(values)

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
                 "| intermediate | " + " | ".join(self.targets) + " | XTREME score (these targets) |",
                 "|---" * (len(self.targets) + 2) + "|"]
        for row in self.rows:
            overall, base = self.overall(row), self.overall(self.baseline_of[row])
            change = "" if overall is None or base is None or row == self.baseline_of[row] else f" ({overall - base:+.1f})"
            lines.append(f"| {row} | " + " | ".join(self.cell(row, t) for t in self.targets)
                         + f" | {'–' if overall is None else f'{overall:.1f}'}{change} |")
        lines += self._languages(best, registry)
        return "\n".join(lines) + "\n"

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

    def heatmap(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np

        grid = np.array([[np.nan if self.delta(r, t) is None else self.delta(r, t) for t in self.targets]
                         for r in self.rows])
        figure, axes = plt.subplots(figsize=(1.3 * len(self.targets) + 4, 0.6 * len(self.rows) + 2))
        limit = max(float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0, 1e-6)
        image = axes.imshow(grid, cmap="RdBu", vmin=-limit, vmax=limit)
        axes.set_xticks(range(len(self.targets)), self.targets, rotation=30)
        axes.set_yticks(range(len(self.rows)), self.rows)
        for (row, column), value in np.ndenumerate(grid):
            if np.isfinite(value):
                axes.text(column, row, f"{value:+.1f}", ha="center", va="center")
        figure.colorbar(image, label="difference from no intermediate task")
        axes.set_title("Zero-shot transfer: change from intermediate-task training")
        figure.tight_layout()
        figure.savefig(path, dpi=120)
        plt.close(figure)
