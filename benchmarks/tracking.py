"""What MLflow tracking costs: the wall time of `sweeps.runs.run.fit` (200 training steps, English validation each
epoch, evaluation, checkpoint) logging to MLflow as it always does (parameters, train/loss every 10 steps through
Lightning's MLflow logger, validation and test scores, the checkpoint as an artifact) against the same `fit` with
tracking replaced by a run that records nothing.

    python benchmarks/tracking.py
    python benchmarks/tracking.py --model multilingual-e5-small --steps 50

Both variants run in one process, interleaved, after one untimed run of each (imports, model conversion, feature
cache, MLflow store creation); the import of mlflow itself is timed apart, in a fresh interpreter. The store is a
temporary sqlite database. On a machine shared with other jobs the two wall times scatter by more than what logging
costs; the time the run spends inside tracking calls (TrackingTime) measures that cost directly, and is the figure to
hold against the 3% target. Writes benchmarks/results/tracking-<model>.json.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-xlmr")
    parser.add_argument("--task", default="panx")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=10, help="fixture rows repeated this many times")
    parser.add_argument("--languages", default="en,de", help="evaluation languages")
    parser.add_argument("--repeats", type=int, default=5)
    _common.add_threads_option(parser)
    return parser.parse_args()


class TrackingTime:
    """The wall time the training process spends inside tracking calls: every MlflowClient method (Lightning's
    logger writes through one too) and the git commit lookup, on the calling thread; what MLflow's asynchronous
    queue writes on its own thread is not counted. Unlike the difference of two wall times, this hardly moves when
    other jobs load the machine."""

    def __init__(self):
        import mlflow

        import sweeps.tracking.store

        self.seconds, self.by_call, self._depth = 0.0, {}, threading.local()
        for name, method in list(vars(mlflow.MlflowClient).items()):
            if inspect.isfunction(method) and not name.startswith("_"):
                setattr(mlflow.MlflowClient, name, self._timed(method))
        sweeps.tracking.store.git_commit = self._timed(sweeps.tracking.store.git_commit)

    def _timed(self, function):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            depth = getattr(self._depth, "value", 0)  # a client method calling another is counted once
            self._depth.value = depth + 1
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self._depth.value = depth
                if depth == 0 and threading.current_thread() is threading.main_thread():
                    seconds = time.perf_counter() - start
                    self.seconds += seconds
                    self.by_call[function.__name__] = self.by_call.get(function.__name__, 0.0) + seconds
        return timed


def cpu_seconds() -> float:
    """CPU time of this process, every thread (MLflow's queue too): user + system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed_fit(config, tracking: bool, tracking_time: TrackingTime) -> tuple[float, float, float]:
    """fit()'s wall time, the part of it spent in tracking calls, and the CPU time it took."""
    import sweeps.tracking.store
    from sweeps.runs.run import fit

    original = sweeps.tracking.store.tracked_run
    if not tracking:
        sweeps.tracking.store.tracked_run = sweeps.tracking.store.untracked_run
    try:
        tracking_time.seconds, tracking_time.by_call = 0.0, {}
        start, cpu_start = time.perf_counter(), cpu_seconds()
        fit(config)
        return time.perf_counter() - start, tracking_time.seconds, cpu_seconds() - cpu_start
    finally:
        sweeps.tracking.store.tracked_run = original


def mlflow_import_s(repeats: int = 3) -> float:
    code = "import time; t = time.perf_counter(); import mlflow; print(time.perf_counter() - t)"
    times = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
             for _ in range(repeats)]
    return _common.median(times)


def main() -> None:
    args = parse_args()
    _common.limit_threads(args.threads)
    import logging
    import math

    from sweeps.config import DataConfig, RunConfig, TrainConfig

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    data_dir = _common.repeated_fixtures(args.repeat)
    with tempfile.TemporaryDirectory(prefix="xstilts-bench-") as tmp:
        train_rows = 400 * args.repeat
        config = RunConfig(
            task=args.task, encoder=args.model, tracking_uri=f"sqlite:///{tmp}/mlflow.db", experiment="bench",
            data=DataConfig(data_dir=str(data_dir), languages=tuple(args.languages.split(","))),
            train=TrainConfig(max_steps=args.steps, batch_size=args.batch_size,
                              epochs=math.ceil(args.steps * args.batch_size / train_rows) + 1))
        tracking_time = TrackingTime()
        for tracking in (True, False):  # warm-up: imports, store creation, cached features
            timed_fit(config, tracking, tracking_time)
        runs, in_tracking, by_call = {"mlflow": [], "off": []}, [], []
        cpu = {"mlflow": [], "off": []}
        for repeat in range(args.repeats):
            for name in runs:
                wall, tracked, cpu_s = timed_fit(config, name == "mlflow", tracking_time)
                runs[name].append(wall)
                cpu[name].append(cpu_s)
                if name == "mlflow":
                    in_tracking.append(tracked)
                    by_call.append(tracking_time.by_call)
                print(f"  repeat {repeat + 1}/{args.repeats} {name:<7} {wall:.2f} s"
                      + (f" ({tracked:.3f} s in tracking calls)" if name == "mlflow" else ""), flush=True)
        import mlflow

        client = mlflow.MlflowClient(config.tracking_uri)
        last = client.search_runs([client.get_experiment_by_name("bench").experiment_id], max_results=1)[0]
        logged = {"metrics": len(last.data.metrics), "train_loss_points":
                  len(client.get_metric_history(last.info.run_id, "train/loss")), "params": len(last.data.params),
                  "artifacts": [a.path for a in client.list_artifacts(last.info.run_id)]}
    on, off = _common.median(runs["mlflow"]), _common.median(runs["off"])
    # each repeat's pair ran back to back, so its ratio cancels load that changes between repeats
    paired = _common.median([a / b - 1 for a, b in zip(runs["mlflow"], runs["off"])])
    in_calls = _common.median(in_tracking)
    calls = {name: _common.median([c.get(name, 0.0) for c in by_call]) for name in by_call[0]}
    cpu_on, cpu_off = _common.median(cpu["mlflow"]), _common.median(cpu["off"])
    rows = [{"variant": "logging off", "wall_s": off, "min_s": min(runs["off"]), "max_s": max(runs["off"]),
             "cpu_s": cpu_off},
            {"variant": "MLflow logging", "wall_s": on, "min_s": min(runs["mlflow"]), "max_s": max(runs["mlflow"]),
             "overhead": on / off - 1, "min_overhead": min(runs["mlflow"]) / min(runs["off"]) - 1,
             "paired_overhead": paired, "cpu_s": cpu_on, "cpu_overhead": cpu_on / cpu_off - 1,
             "tracking_calls_s": in_calls, "tracking_calls_share": in_calls / off}]
    print(f"\n{args.model} on {args.task}: fit() with {args.steps} steps of {args.batch_size}; medians of "
          f"{args.repeats}")
    _common.print_table(rows, [("variant", "variant", ""), ("wall_s", "median s", ".2f"), ("min_s", "min s", ".2f"),
                               ("max_s", "max s", ".2f"), ("overhead", "added (medians)", "+.1%"),
                               ("min_overhead", "added (minima)", "+.1%"),
                               ("paired_overhead", "added (median of pairs)", "+.1%"),
                               ("cpu_s", "CPU s", ".2f"), ("cpu_overhead", "CPU added", "+.1%"),
                               ("tracking_calls_s", "in tracking calls s", ".3f"),
                               ("tracking_calls_share", "tracking calls / fit off", "+.1%")])
    import_s = mlflow_import_s()
    slowest = sorted(calls.items(), key=lambda call: -call[1])
    print("tracking calls, median s: " + ", ".join(f"{name} {seconds:.3f}" for name, seconds in slowest))
    print(f"what the logged run holds: {logged}")
    print(f"import mlflow in a fresh interpreter (paid once per process, by every xstilts command that tracks): "
          f"{import_s:.2f} s")
    _common.write_results(f"tracking-{args.model}" + ("" if args.steps == 200 else f"-{args.steps}steps"), {
        "settings": vars(args), "table": rows, "overhead": on / off - 1, "paired_overhead": paired,
        "tracking_calls_s": in_tracking, "tracking_calls_by_name_s": calls, "runs": runs, "cpu_s": cpu,
        "logged": logged, "mlflow_import_s": import_s})


if __name__ == "__main__":
    main()
