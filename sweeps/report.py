"""`xstilts report`: the paper's table from MLflow. Rows: intermediate task (or sequence); columns: target tasks;
each cell the zero-shot target score of the best trial (chosen on English validation) and its difference from the
no-intermediate baseline; plus the XTREME score over the targets present, per-language detail, a CSV and a heatmap."""

from __future__ import annotations

import csv
from pathlib import Path
from statistics import mean

BASELINE = "none"


def task_score(metrics: dict, task) -> tuple[float | None, str]:
    """A target's score as XTREME aggregates it (QA: mean of F1 and EM), from the test split where there is one."""
    for split in ("test", "validation"):
        if task.format == "span_qa" and f"{split}/mean/f1" in metrics:
            return (metrics[f"{split}/mean/f1"] + metrics[f"{split}/mean/exact_match"]) / 2, split
        if f"{split}/mean/{task.metric}" in metrics:
            return metrics[f"{split}/mean/{task.metric}"], split
    return None, ""


def best_runs(client, experiment: str) -> dict[tuple[str, str], object]:
    """(intermediate label, target) -> the finished target-phase run with the best English validation score."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ValueError(f"no MLflow experiment named {experiment!r}")
    runs = client.search_runs([found.experiment_id], "tags.`xstilts.phase` = 'target' and attributes.status = "
                              "'FINISHED'", max_results=50000)
    best = {}
    for run in runs:
        key = (run.data.tags.get("xstilts.started_from", BASELINE), run.data.tags["xstilts.task"])
        score = run.data.metrics.get("selection/score", float("-inf"))
        if key not in best or score > best[key].data.metrics.get("selection/score", float("-inf")):
            best[key] = run
    return best


def build(experiment: str, uri: str, out: Path) -> dict[str, Path]:
    import mlflow

    from datamodules.tasks import load_registry

    client = mlflow.MlflowClient(uri)
    registry = load_registry()
    best = best_runs(client, experiment)
    intermediates = sorted({k[0] for k in best}, key=lambda label: (label != BASELINE, label))
    targets = sorted({k[1] for k in best})
    scores = {key: task_score(run.data.metrics, registry[key[1]])[0] for key, run in best.items()}
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "report.md", "csv": out / "report.csv", "heatmap": out / "heatmap.png"}
    paths["markdown"].write_text(_markdown(experiment, intermediates, targets, scores, best, registry))
    _csv(paths["csv"], intermediates, targets, scores)
    _heatmap(paths["heatmap"], intermediates, targets, scores)
    parent = client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                                "tags.`xstilts.kind` = 'sweep'", max_results=1)
    if parent:
        for path in paths.values():
            client.log_artifact(parent[0].info.run_id, str(path), "report")
    return paths


def delta(scores, intermediate, target) -> float | None:
    value, base = scores.get((intermediate, target)), scores.get((BASELINE, target))
    return None if value is None or base is None else value - base


def xtreme_score(scores, intermediate, targets) -> float | None:
    values = [scores.get((intermediate, t)) for t in targets]
    return None if any(v is None for v in values) else mean(values)


def _cell(value, change) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" + ("" if change is None else f" ({change:+.1f})")


def _markdown(experiment, intermediates, targets, scores, best, registry) -> str:
    lines = [f"# xstilts report: {experiment}", "",
             "Zero-shot score per target (mean over its languages; QA: (F1+EM)/2), best trial by English validation;"
             " in brackets the difference from no intermediate task.", "",
             "| intermediate | " + " | ".join(targets) + " | XTREME score (these targets) |",
             "|---" * (len(targets) + 2) + "|"]
    base_score = xtreme_score(scores, BASELINE, targets)
    for label in intermediates:
        overall = xtreme_score(scores, label, targets)
        change = None if overall is None or base_score is None or label == BASELINE else overall - base_score
        lines.append(f"| {label} | " + " | ".join(_cell(scores.get((label, t)), None if label == BASELINE
                                                        else delta(scores, label, t)) for t in targets)
                     + f" | {_cell(overall, change)} |")
    for target in targets:
        metric = registry[target].metric
        runs = {label: best[(label, target)] for label in intermediates if (label, target) in best}
        languages = sorted({k.split("/")[1] for r in runs.values() for k in r.data.metrics
                            if k.startswith("test/") and k.endswith(f"/{metric}") and "mean" not in k})
        split = "test"
        if not languages:
            split = "validation"
            languages = sorted({k.split("/")[1] for r in runs.values() for k in r.data.metrics
                                if k.startswith("validation/") and k.endswith(f"/{metric}") and "mean" not in k})
        lines += ["", f"## {target}: {split} {metric} per language", "",
                  "| intermediate | " + " | ".join(languages) + " |", "|---" * (len(languages) + 1) + "|"]
        for label, run in runs.items():
            values = [run.data.metrics.get(f"{split}/{lang}/{metric}") for lang in languages]
            lines.append(f"| {label} | " + " | ".join("–" if v is None else f"{v:.1f}" for v in values) + " |")
    return "\n".join(lines) + "\n"


def _csv(path, intermediates, targets, scores) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["intermediate", "target", "score", "delta_vs_none"])
        for label in intermediates:
            for target in targets:
                if (label, target) in scores:
                    writer.writerow([label, target, scores[(label, target)], delta(scores, label, target)])


def _heatmap(path, intermediates, targets, scores) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    grid = np.array([[np.nan if delta(scores, i, t) is None else delta(scores, i, t) for t in targets]
                     for i in intermediates])
    figure, axes = plt.subplots(figsize=(1.2 * len(targets) + 3, 0.6 * len(intermediates) + 2))
    limit = max(float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0, 1e-6)
    image = axes.imshow(grid, cmap="RdBu", vmin=-limit, vmax=limit)
    axes.set_xticks(range(len(targets)), targets, rotation=30)
    axes.set_yticks(range(len(intermediates)), intermediates)
    for (row, column), value in np.ndenumerate(grid):
        if np.isfinite(value):
            axes.text(column, row, f"{value:+.1f}", ha="center", va="center")
    figure.colorbar(image, label="difference from no intermediate task")
    axes.set_title("Zero-shot transfer: change from intermediate-task training")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
