"""The tokenized-feature cache: the first load of a task (read the files, canonicalize, tokenize, save) against
the second load of the same task (every set memory-mapped from the cache), each in a fresh process, timing the
TaskDataModule set-up that `sweeps.runs.run.fit` does (training set, English validation, every evaluation set).

    python benchmarks/cache.py --task xnli --repeat 25 --train-repeat 250

Default sizes: XNLI's training task MNLI 100,000 rows (400 x 250; the real one has 393,000), 2,000 rows per
language and split in XNLI (80 x 25; the real test sets have 5,010). Each repeat uses fresh, empty caches
(datasets' and xstilts' features) in a temporary folder, then loads twice.
Target: the second load at least 10x faster. Writes benchmarks/results/cache-<task>.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


# the dataset folders each task reads (the others are not copied)
DATASETS = {"xnli": ("nyu-mll/glue", "google/xtreme/XNLI"), "panx": ("google/xtreme/PAN-X",),
            "pawsx": ("google/xtreme/PAWS-X",)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-xlmr")
    parser.add_argument("--task", default="xnli", choices=sorted(DATASETS))
    parser.add_argument("--repeat", type=int, default=25, help="evaluation rows repeated this many times")
    parser.add_argument("--train-repeat", type=int, default=250, help="training rows repeated this many times")
    parser.add_argument("--repeats", type=int, default=3)
    _common.add_threads_option(parser)
    return parser.parse_args()


def child(p: dict) -> dict:
    """One set-up of the task's data, as fit() does it, with the caches under p['cache']."""
    os.environ["HF_DATASETS_CACHE"] = str(Path(p["cache"]) / "datasets")
    from lightning_modules.encoders import load_encoder
    from lightning_modules.formats import get_format
    from sweeps.config import DataConfig, RunConfig
    from sweeps.runs.preflight import check_run
    from sweeps.runs.run import _datamodule

    config = RunConfig(task=p["task"], encoder=p["model"], data=DataConfig(data_dir=p["data_dir"]))
    prepared = check_run(config)
    fmt = get_format(prepared.task.format)
    _, tokenizer = load_encoder(p["model"])
    datamodule = _datamodule(config, prepared, fmt, tokenizer)
    datamodule.cache_root = Path(p["cache"]) / "features"
    start = time.perf_counter()
    datamodule.setup("fit")
    datamodule.setup("test")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "cache_hits": datamodule.cache_hits, "sizes": datamodule.sizes()}


def main() -> None:
    args = parse_args()
    _common.limit_threads(args.threads)
    data_dir = _common.repeated_fixtures(args.repeat, args.train_repeat, only=DATASETS[args.task])
    base = {"model": args.model, "task": args.task, "data_dir": str(data_dir)}
    runs = []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="xstilts-bench-cache-") as cache:
            first = _common.run_child(__file__, {**base, "cache": cache})
            second = _common.run_child(__file__, {**base, "cache": cache})
        assert not any(first["cache_hits"].values()) and all(second["cache_hits"].values())
        runs.append({"first_s": first["seconds"], "second_s": second["seconds"],
                     "speedup": first["seconds"] / second["seconds"]})
        print(f"  repeat {repeat + 1}/{args.repeats}: first {first['seconds']:.2f} s, second {second['seconds']:.2f} s",
              flush=True)
    sizes = first["sizes"]
    summary = _common.summarize(runs, ["first_s", "second_s", "speedup"])
    row = {"task": args.task, "sets": len(sizes), "examples": sum(sizes.values()),
           **{k: v["median"] for k, v in summary.items()}}
    print(f"\nTaskDataModule set-up of {args.task} ({args.model} tokenizer), fresh process each; "
          f"medians of {args.repeats}")
    _common.print_table([row], [("task", "task", ""), ("sets", "sets", ""), ("examples", "examples", ""),
                                ("first_s", "first load s", ".2f"), ("second_s", "second load s", ".2f"),
                                ("speedup", "speed-up", ".1f")])
    _common.write_results(f"cache-{args.task}", {"settings": vars(args), "table": [row], "sizes": sizes,
                                                  "summary": summary, "runs": runs})


if __name__ == "__main__":
    _common.main_or_child(main, child)
