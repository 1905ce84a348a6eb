"""Where a small sweep's CPU time goes: `xstilts sweep` of one study with 2 trials (the tiny model fine-tuned on
PAN-X, no intermediate task), one worker, in a fresh process and fresh stores on a warm cache. The process' whole
CPU time (start, imports, preflight, studies, claims, plots, exit: the parent's RUSAGE_CHILDREN) is split into

- the phase runs: CPU inside `sweeps.runs.run.fit` (data, model, training, validation, test, checkpoint, tracking);
- of which training and evaluation: CPU inside Lightning's `Trainer.fit` and `Trainer.test`;
- orchestration: the rest, paid once per worker process (every trial of a worker runs in that process); of it, the
  import floor (`import lightning.pytorch, mlflow, datasets, transformers` in a fresh interpreter, timed after each
  sweep) is what any process that fits pays, and the rest is the sweep's own (preflight, the stores' creation, studies,
  claims, plots).

    python benchmarks/sweep_overhead.py --repeats 3

Target (issue 18): orchestration <= 25% of the 2-trial sweep's CPU time. --epochs sets the work per trial (the
tracking benchmark's tiny run: 200 steps of 32, about 16 epochs of the 400 fixture rows). Writes
benchmarks/results/sweep_overhead-<epochs>epochs.json.
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

EXPERIMENT = """\
name: overhead
encoder: tiny-xlmr
data: {data_dir: fixtures, max_length: 128}
budget: {trials: 2}
phases: {baseline: true, targets: [panx]}
train:
  target: {lr: {low: 1.0e-4, high: 1.0e-3, log: true}, epochs: EPOCHS, batch_size: 32}
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=16, help="epochs per trial over the 400 PAN-X fixture rows")
    return parser.parse_args()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------------- the sweep process (child)


class CpuInside:
    """CPU seconds of this process (every thread) spent inside the wrapped calls, outermost calls only."""

    def __init__(self):
        self.seconds, self.calls, self._depth = 0.0, 0, 0

    def wrap(self, function):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            self._depth += 1
            start = cpu_seconds()
            try:
                return function(*args, **kwargs)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self.seconds += cpu_seconds() - start
                    self.calls += 1
        return timed


def sweep_child(p: dict) -> None:
    """`xstilts sweep` exactly as the command runs it (sweeps.cli.main, then its fast exit), with CPU counters around
    the phase runs and Lightning's loops; the counters are printed before the exit."""
    import json

    import lightning.pytorch as pl

    import sweeps.runs.run
    from sweeps.cli import leave, main

    phase_runs, loops = CpuInside(), CpuInside()
    sweeps.runs.run.fit = phase_runs.wrap(sweeps.runs.run.fit)
    pl.Trainer.fit = loops.wrap(pl.Trainer.fit)
    pl.Trainer.test = loops.wrap(pl.Trainer.test)
    status = main(p["argv"])
    print(_common.RESULT_PREFIX + json.dumps({"status": status, "phase_runs_cpu_s": phase_runs.seconds,
                                              "phase_runs": phase_runs.calls, "loops_cpu_s": loops.seconds,
                                              "process_cpu_s": cpu_seconds()}), flush=True)
    leave(status)


# ---------------------------------------------------------------------- the measurement (parent)


def one_sweep(folder: Path, epochs: int) -> dict:
    import json

    folder.mkdir(parents=True)
    (folder / "overhead.yaml").write_text(EXPERIMENT.replace("EPOCHS", str(epochs)))
    argv = ["sweep", "overhead.yaml", "--storage", f"sqlite:///{folder / 'optuna.db'}",
            "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"]
    cpu_before, started = children_cpu_seconds(), time.perf_counter()
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps({"argv": argv})]
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - started, children_cpu_seconds() - cpu_before
    lines = [line for line in done.stdout.splitlines() if line.startswith(_common.RESULT_PREFIX)]
    if done.returncode or not lines:
        raise SystemExit(f"the sweep failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1][len(_common.RESULT_PREFIX):])
    orchestration = cpu - result["phase_runs_cpu_s"]
    return {**result, "wall_s": wall, "cpu_s": cpu, "orchestration_cpu_s": orchestration,
            "orchestration_share": orchestration / cpu, "outside_loops_share": 1 - result["loops_cpu_s"] / cpu}


def floor_cpu_s() -> float:
    """CPU time of a fresh interpreter importing the libraries every fit needs (benchmarks/fixed_cost.py's floor)."""
    from fixed_cost import FLOOR

    before = children_cpu_seconds()
    subprocess.run([sys.executable, "-c", FLOOR], check=True)
    return children_cpu_seconds() - before


def main() -> None:
    args = parse_args()
    os.environ.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})  # one worker, one thread: CPU = work
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="xstilts-bench-") as tmp:
        os.environ["XSTILTS_CACHE"] = os.environ.get("XSTILTS_CACHE", str(Path(tmp) / "cache"))
        one_sweep(Path(tmp) / "warm-up", 1)  # the tiny model and the feature cache, built once
        runs = []
        for repeat in range(args.repeats):
            run = one_sweep(Path(tmp) / f"sweep-{repeat}", args.epochs)
            run["floor_cpu_s"] = floor_cpu_s()
            run["above_floor_share"] = (run["orchestration_cpu_s"] - run["floor_cpu_s"]) / run["cpu_s"]
            runs.append(run)
            print(f"  repeat {repeat + 1}/{args.repeats}: {runs[-1]['cpu_s']:.1f} CPU s, orchestration "
                  f"{runs[-1]['orchestration_share']:.0%}", flush=True)
    keys = ["wall_s", "cpu_s", "phase_runs_cpu_s", "loops_cpu_s", "orchestration_cpu_s", "orchestration_share",
            "outside_loops_share", "floor_cpu_s", "above_floor_share"]
    row = {key: _common.median([r[key] for r in runs]) for key in keys}
    _common.print_table([row], [("wall_s", "wall s", ".1f"), ("cpu_s", "CPU s", ".1f"),
                                ("phase_runs_cpu_s", "in phase runs", ".1f"),
                                ("loops_cpu_s", "in Trainer.fit/test", ".1f"),
                                ("orchestration_cpu_s", "orchestration", ".1f"),
                                ("orchestration_share", "orchestration share", ".0%"),
                                ("outside_loops_share", "outside fit/test loops", ".0%"),
                                ("floor_cpu_s", "import floor", ".1f"),
                                ("above_floor_share", "orchestration above the floor", ".0%")])
    print(f"2 trials of {args.epochs} epochs, one worker; medians of {args.repeats}; load average before "
          f"{load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    _common.write_results(f"sweep_overhead-{args.epochs}epochs", {"settings": vars(args), "row": row, "runs": runs,
                                             "load_before": load_before, "load_after": os.getloadavg()})


if __name__ == "__main__":
    _common.main_or_child(main, sweep_child)
