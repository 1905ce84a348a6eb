"""The fixed cost of one process: a warm tiny `xstilts fit` (features cached, model built, store created) against
the import floor of the libraries it needs (`import lightning.pytorch, mlflow, datasets, transformers`), fresh
processes, interleaved, medians of --repeats. The fit's remainder above the floor is split into its parts from one
more fit in a child that times them: start (interpreter and imports, from `python -X importtime` by package), the
preflight, the model, the data, training, the test, tracking and checkpoint (what is left of `fit()`), and the
exit (from `fit()`'s return to the process' end, seen by the parent; the command leaves without the interpreter's
teardown: sweeps/cli.py, `leave`).

    python benchmarks/fixed_cost.py --repeats 7

Target: the fit within 1.0 s of the floor. Writes benchmarks/results/fixed_cost.json.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

FLOOR = "import lightning.pytorch, mlflow, datasets, transformers"
FIT = ["fit", "panx", "--data-dir", "fixtures", "--max-steps", "2", "--languages", "en", "--eval-splits", "test",
       "--max-eval-examples", "16", "--batch-size", "8"]
PARTS_PREFIX = "FIXED-COST-PARTS "


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    return parser.parse_args()


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, capture_output=True, check=True, cwd=_common.ROOT)
    return time.perf_counter() - start


def import_times(command: list[str]) -> dict[str, float]:
    """Seconds of imports per top-level package, from `python -X importtime`."""
    done = subprocess.run([sys.executable, "-X", "importtime", *command], capture_output=True, text=True, check=True,
                          cwd=_common.ROOT)
    totals: Counter = Counter()
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if match and len(match.group(3)) == 1:  # a top-level import: its cumulative time
            totals[match.group(4).split(".")[0]] += int(match.group(2)) / 1e6
    return dict(totals.most_common())


def parts(tracking_uri: str) -> dict:
    """One fit in a child whose parts are timed; the exit is the time from fit()'s return to the child's end."""
    start = time.time()
    done = subprocess.run([sys.executable, __file__, "--parts", tracking_uri], capture_output=True, text=True,
                          cwd=_common.ROOT)
    end = time.time()
    line = next((x for x in done.stdout.splitlines() if x.startswith(PARTS_PREFIX)), None)
    if line is None:
        raise RuntimeError(f"the timed fit failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    result = json.loads(line[len(PARTS_PREFIX):])
    result["exit"] = end - result.pop("returned_at")
    result["start"] = result.pop("started_at") - start
    result["total"] = end - start
    return result


def timed_parts(tracking_uri: str) -> None:
    """In the child: fit() with its parts timed by wrapping the functions that do them."""
    started_at = time.time()
    import lightning as L

    import datamodules.datamodule as datamodule
    import lightning_modules.encoders as encoders
    import sweeps.runs.run as run
    from sweeps.cli import leave, main

    spent: Counter = Counter()

    def clocked(owner, name: str, part: str):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[part] += time.perf_counter() - start
        setattr(owner, name, wrapper)

    clocked(run, "check_run", "preflight")
    clocked(encoders, "load_encoder", "model")
    clocked(datamodule.TaskDataModule, "setup", "data")
    clocked(L.Trainer, "fit", "training")
    clocked(L.Trainer, "test", "test")
    clocked(run, "fit", "fit")
    imported = time.time()
    status = main([*FIT, "--tracking-uri", tracking_uri])
    spent["tracking and checkpoint"] = spent.pop("fit") - sum(v for k, v in spent.items() if k != "fit")
    print(PARTS_PREFIX + json.dumps({"started_at": started_at, "imports": imported - started_at, **spent,
                                     "returned_at": time.time()}), flush=True)
    leave(status)  # as the xstilts command leaves


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="xstilts-fixed-") as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        commands = {"import floor": [sys.executable, "-c", FLOOR],
                    "xstilts fit (tiny, warm)": [sys.executable, "-m", "sweeps.cli", *FIT, "--tracking-uri", uri]}
        for command in commands.values():  # untimed: byte-code, features, the model, the store
            subprocess.run(command, capture_output=True, check=True, cwd=_common.ROOT)
        times = {name: [] for name in commands}
        for repeat in range(args.repeats):
            for name, command in commands.items():
                times[name].append(timed(command))
            print(f"  repeat {repeat + 1}/{args.repeats}: " +
                  ", ".join(f"{n} {t[-1]:.2f} s" for n, t in times.items()), flush=True)
        remainders = [fit - floor for floor, fit in zip(*times.values())]
        breakdown = parts(uri)
        imports = import_times(["-m", "sweeps.cli", *FIT, "--tracking-uri", uri])
    floor, fit = (_common.median(t) for t in times.values())
    print(f"\nwall s, fresh processes, medians of {args.repeats}: import floor {floor:.2f}, fit {fit:.2f}, "
          f"remainder (median of pairs) {_common.median(remainders):.2f} (target <= 1.0)")
    print("one fit's parts, s: " + ", ".join(f"{k} {v:.2f}" for k, v in breakdown.items()))
    print("its imports by package (python -X importtime), s: " +
          ", ".join(f"{k} {v:.2f}" for k, v in list(imports.items())[:10]))
    _common.write_results("fixed_cost", {"settings": vars(args), "floor_s": floor, "fit_s": fit,
                                         "remainder_s": _common.median(remainders), "runs": times,
                                         "parts": breakdown, "imports_by_package": imports})


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--parts":
        timed_parts(sys.argv[2])
    else:
        main()
