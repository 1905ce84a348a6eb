"""Zero-shot evaluation throughput: `sweeps.runs.run.evaluate` (what `xstilts evaluate CHECKPOINT` runs) over every
language of a task, on the fixtures repeated to a realistic size, from a checkpoint of the given encoder with a
fresh head (scores are meaningless; the work is the same). Counts how many times the model is loaded.

    python benchmarks/evaluate.py --model tiny-xlmr --task panx
    python benchmarks/evaluate.py --model multilingual-e5-small --task panx --repeat 5

The fixtures hold a few languages (PAN-X: en, de, fr, es, 80 rows per split); every other language of the task
whose data is a file of its own (PAN-X's other 36, UD-POS, XQuAD, ...) gets a copy of one fixture language's files,
so that the evaluation walks every language as it would on the real data. --repeat 25 makes 2,000 rows per language
and split (PAN-X's real test sets hold 100 to 10,000). The first run (tokenizing, caching) is timed apart; then
--repeats runs in this process with the feature cache warm, and the table shows medians.
Writes benchmarks/results/evaluate-<model>-<task>.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-xlmr")
    parser.add_argument("--task", default="panx")
    parser.add_argument("--repeat", type=int, default=25, help="fixture rows repeated this many times")
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--grouping", choices=("on", "off", "both"), default="both",
                        help="evaluation batches grouped by length (data.group_eval_by_length); both: interleaved")
    _common.add_threads_option(parser)
    return parser.parse_args()


def make_checkpoint(folder: Path, model: str, task_name: str, max_length: int) -> Path:
    from datamodules.tasks import get_task, load_registry
    from lightning_modules.checkpoint import save_checkpoint
    from lightning_modules.encoders import load_encoder
    from lightning_modules.formats import get_format

    registry = load_registry()
    task = get_task(task_name, registry)
    encoder, tokenizer = load_encoder(model)
    head = get_format(task.format).build_head(encoder, task, task.labels)
    meta = {"task": task.name, "format": task.format, "labels": task.labels, "train_task": task.train_task or task.name,
            "encoder_source": model, "max_length": max_length, "doc_stride": max_length // 2, "run_id": "benchmark"}
    return save_checkpoint(folder, encoder, tokenizer, head, meta)


class Counters:
    """Wraps load_encoder and Trainer.test to count model loads and time the evaluation loop itself."""

    def __init__(self):
        import lightning as L

        import lightning_modules.encoders as encoders

        self.loads, self.test_s, self.examples = 0, 0.0, 0
        original_load, original_test = encoders.load_encoder, L.Trainer.test

        def load_encoder(*args, **kwargs):
            self.loads += 1
            return original_load(*args, **kwargs)

        def test(trainer, module, datamodule=None, **kwargs):
            start = time.perf_counter()
            try:
                return original_test(trainer, module, datamodule=datamodule, **kwargs)
            finally:
                self.test_s += time.perf_counter() - start
                self.examples += sum(len(s.features) for s in datamodule.eval_sets)

        encoders.load_encoder, L.Trainer.test = load_encoder, test

    def reset(self):
        self.loads, self.test_s, self.examples = 0, 0.0, 0


def timed_evaluate(checkpoint: Path, config, counters: Counters) -> dict:
    from sweeps.runs.run import evaluate

    counters.reset()
    start = time.perf_counter()
    result = evaluate(str(checkpoint), config)
    wall = time.perf_counter() - start
    languages = sorted({key.split("/")[1] for key in result.scores if key.count("/") == 2} - {"mean", "zero_shot_mean"})
    return {"wall_s": wall, "test_loop_s": counters.test_s, "examples": counters.examples,
            "model_loads": counters.loads, "languages": len(languages),
            "examples_per_s": counters.examples / wall, "loop_examples_per_s": counters.examples / counters.test_s}


def main() -> None:
    args = parse_args()
    _common.limit_threads(args.threads)
    import logging

    from sweeps.config import DataConfig, RunConfig, TrainConfig

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    data_dir = _common.repeated_fixtures(args.repeat)
    languages = _common.fill_languages(data_dir, args.task)
    print(f"  {args.task}: data in {len(languages)} languages", flush=True)
    counters = Counters()
    with tempfile.TemporaryDirectory(prefix="xstilts-bench-") as tmp:
        checkpoint = make_checkpoint(Path(tmp) / "checkpoint", args.model, args.task, args.max_length)
        groupings = {"on": (True,), "off": (False,), "both": (False, True)}[args.grouping]
        configs = {grouped: RunConfig(task=args.task, encoder=args.model, tracking_uri=f"sqlite:///{tmp}/mlflow.db",
                                      experiment="bench", data=DataConfig(data_dir=str(data_dir),
                                                                          group_eval_by_length=grouped),
                                      train=TrainConfig(eval_batch_size=args.eval_batch_size))
                   for grouped in groupings}
        first = timed_evaluate(checkpoint, configs[groupings[0]], counters)
        print(f"  first run (tokenizes unless cached before): {first['wall_s']:.2f} s", flush=True)
        runs = {grouped: [] for grouped in groupings}
        for repeat in range(args.repeats):
            for grouped, config in configs.items():
                runs[grouped].append(timed_evaluate(checkpoint, config, counters))
                print(f"  repeat {repeat + 1}/{args.repeats}, grouped {grouped}: {runs[grouped][-1]['wall_s']:.2f} s, "
                      f"{runs[grouped][-1]['examples_per_s']:.0f} examples/s", flush=True)
    keys = ["wall_s", "test_loop_s", "examples_per_s", "loop_examples_per_s"]
    summary = {grouped: _common.summarize(r, keys) for grouped, r in runs.items()}
    rows = [{"model": args.model, "task": args.task, "grouped": grouped, "languages": r[0]["languages"],
             "examples": r[0]["examples"], "model_loads": r[0]["model_loads"],
             **{k: summary[grouped][k]["median"] for k in keys}} for grouped, r in runs.items()]
    if len(groupings) == 2:  # the speed-up of grouping: the median of the interleaved pairs' ratios
        rows[1]["speedup"] = _common.median([off["test_loop_s"] / on["test_loop_s"]
                                             for off, on in zip(runs[False], runs[True])])
    print(f"\nevaluate(): every language of {args.task} with data ({rows[0]['languages']}), validation and test; "
          f"medians of {args.repeats}, features cached")
    _common.print_table(rows, [("model", "model", ""), ("grouped", "grouped by length", ""),
                               ("languages", "languages", ""), ("examples", "examples", ""),
                               ("model_loads", "model loads", ""), ("wall_s", "evaluate() s", ".2f"),
                               ("test_loop_s", "test loop s", ".2f"), ("examples_per_s", "examples/s", ".0f"),
                               ("loop_examples_per_s", "loop examples/s", ".0f"),
                               ("speedup", "test loop x ungrouped", ".2f")])
    _common.write_results(f"evaluate-{args.model}-{args.task}", {
        "settings": vars(args), "table": rows, "first_run": first,
        "summary": {str(k): v for k, v in summary.items()}, "runs": {str(k): v for k, v in runs.items()}})


if __name__ == "__main__":
    main()
