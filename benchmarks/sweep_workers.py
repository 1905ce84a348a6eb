"""The same grid of studies swept by 1 and by 2 workers (`xstilts sweep --workers N`, one CPU thread per worker):
wall-clock speed-up, and the share of the time each worker sat idle (the sweep's wall time not covered by its trial
runs in MLflow). Grid: 2 intermediate tasks x 2 targets + the baseline on the tiny model and the fixtures, 2 trials
per study (16 trials). The runs alternate 1, 2, 1, 2 ... in fresh stores on a warm cache; medians are reported.

    python benchmarks/sweep_workers.py --repeats 3 [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from _common import ROOT, machine, median, print_table, write_results

EXPERIMENT = """\
name: grid
encoder: tiny-xlmr
data: {data_dir: fixtures, max_length: 128, max_train_examples: 400, max_eval_examples: 40, eval_splits: [test]}
budget: {trials: 2}
phases: {intermediate: [mnli, qqp], baseline: true, targets: [pawsx, xnli]}
train:
  intermediate: {lr: {low: 1.0e-4, high: 1.0e-3, log: true}, epochs: EPOCHS, batch_size: 16}
  target: {lr: [1.0e-3, 3.0e-4], epochs: EPOCHS, batch_size: 16}
"""


def sweep(workers: int, folder: Path, epochs: int) -> dict:
    """One sweep in fresh stores under `folder`; its wall time and each worker's idle share."""
    import mlflow

    folder.mkdir(parents=True)
    (folder / "grid.yaml").write_text(EXPERIMENT.replace("EPOCHS", str(epochs)))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    command = [sys.executable, "-m", "sweeps.cli", "sweep", "grid.yaml", "--workers", str(workers),
               "--storage", f"sqlite:///{folder / 'optuna.db'}", "--tracking-uri", uri]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"sweep with {workers} worker(s) failed:\n{done.stderr[-3000:]}")
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("grid").experiment_id], "tags.`xstilts.kind` = 'trial'",
                              max_results=1000)
    busy = defaultdict(float)
    for run in runs:
        busy[run.data.tags["xstilts.worker"]] += (run.info.end_time - run.info.start_time) / 1000
    idle = [max(0.0, 1 - seconds / wall) for seconds in busy.values()] + [1.0] * (workers - len(busy))
    return {"workers": workers, "wall_s": wall, "trials": len(runs), "idle_share": sum(idle) / len(idle)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial: the work per trial, against the "
                                                              "sweep's fixed cost (process start, preflight)")
    args = parser.parse_args()
    os.chdir(ROOT)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="xstilts-bench-") as tmp:
        os.environ["XSTILTS_CACHE"] = os.environ.get("XSTILTS_CACHE", str(Path(tmp) / "cache"))
        sweep(1, Path(tmp) / "warm-up", 1)  # the tiny model and the feature cache built once, for every run alike
        runs = [sweep(workers, Path(tmp) / f"{workers}-{repeat}", args.epochs)
                for repeat in range(args.repeats) for workers in (1, 2)]
    rows = []
    for workers in (1, 2):
        mine = [r for r in runs if r["workers"] == workers]
        rows.append({"workers": workers, "wall_s": median([r["wall_s"] for r in mine]),
                     "idle_share": median([r["idle_share"] for r in mine]), "trials": mine[0]["trials"]})
    speedup = rows[0]["wall_s"] / rows[1]["wall_s"]
    print_table(rows, [("workers", "workers", "d"), ("trials", "trials", "d"), ("wall_s", "wall s (median)", ".1f"),
                       ("idle_share", "idle share", ".2f")])
    print(f"speed-up with 2 workers: {speedup:.2f}x (median of {args.repeats}); load average before "
          f"{load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    write_results("sweep_workers", {"machine": machine(), "runs": runs, "rows": rows, "speedup": speedup,
                                    "load_before": load_before, "load_after": os.getloadavg()})


if __name__ == "__main__":
    main()
