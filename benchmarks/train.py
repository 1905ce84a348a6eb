"""Training throughput: a target-phase fine-tune through xstilts (TaskDataModule + TaskModule + the Lightning
Trainer exactly as `sweeps/runs/run.py` builds it, logger off) against a plain PyTorch + transformers loop written
below (same model folder, same data, same batch size, same truncation and dynamic padding, same AdamW groups,
hyper-parameters and linear schedule, same number of steps), and against that plain loop padding every batch to
--max-length (`run_glue`'s default; Hugging Face's token-classification example pads per batch, as xstilts does).

    python benchmarks/train.py --model tiny-xlmr --task panx --repeats 5
    python benchmarks/train.py --model multilingual-e5-small --task panx --steps 20 --batch-size 16 --max-length 128 \
        --repeats 3

`plain-fused`, the fair baseline, is the plain loop with the fused AdamW kernel xstilts uses (on CPU and CUDA): the
ratio to it is the framework's own cost. `plain` uses torch's default AdamW implementation (a per-tensor loop on CPU,
foreach on CUDA), as a loop written from the documentation would; it differs by that one argument. `xstilts-grouped` adds --group-by-length.

Training data: the task's English training fixture repeated --repeat times (PAN-X.en: 400 rows; MNLI, XNLI's
training task: 400 rows). Each run is a fresh child process (so peak memory is its own); the variants run
interleaved, --repeats times, and the table shows medians. Writes benchmarks/results/train-<model>-<task>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (sets the offline environment before anything imports datasets)

VARIANTS = {
    "plain": "plain PyTorch + transformers loop, dynamic padding, torch's default AdamW",
    "plain-fused": "the plain loop with fused AdamW (the optimizer kernel xstilts uses)",
    "plain-pad-max": "the plain loop, every batch padded to --max-length",
    "xstilts": "xstilts fit path (sweeps/runs/run.py Trainer), logger off",
    "xstilts-grouped": "xstilts with --group-by-length",
}
DEFAULT_VARIANTS = ["plain", "plain-fused", "plain-pad-max", "xstilts", "xstilts-grouped"]
# the English training file of each task, as a plain loop would read it
PLAIN_DATA = {
    "panx": ("google/xtreme/PAN-X.en/train.jsonl", "tagging"),
    "xnli": ("nyu-mll/glue/mnli/train.jsonl", "classification"),
    "pawsx": ("google/xtreme/PAWS-X.en/train.jsonl", "classification"),
}
WARMUP_STEPS = 5  # steps left out of the steady-state rate


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-xlmr", help="tiny-xlmr or multilingual-e5-small")
    parser.add_argument("--task", default="panx", choices=sorted(PLAIN_DATA))
    parser.add_argument("--steps", type=int, default=125)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=10, help="fixture rows repeated this many times")
    parser.add_argument("--repeats", type=int, default=3, help="measured runs of each variant")
    parser.add_argument("--precision", default="32-true", help="32-true, or bf16-mixed (both sides)")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (both sides)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the encoder (both sides)")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help=f"comma-separated, from: {', '.join(VARIANTS)}; a variant takes overrides of its "
                             f"settings after a colon, e.g. xstilts:num_workers=1;batch_size=64")
    parser.add_argument("--seed", type=int, default=0)
    _common.add_threads_option(parser)
    return parser.parse_args()


# ---------------------------------------------------------------------- one run (child process)


def device():
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_xstilts(p: dict) -> dict:
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lightning_modules.encoders import load_encoder
    from lightning_modules.formats import get_format
    from lightning_modules.task_module import TaskModule
    from sweeps.config import DataConfig, RunConfig, TrainConfig
    from sweeps.runs.preflight import check_run
    from sweeps.runs.run import _datamodule, _trainer

    epochs = math.ceil(p["steps"] * p["batch_size"] / p["train_rows"]) + 1
    data = DataConfig(data_dir=p["data_dir"], max_length=p["max_length"], num_workers=p["num_workers"],
                      **({"group_by_length": True} if p["variant"] == "xstilts-grouped" else {}))
    train = TrainConfig(batch_size=p["batch_size"], max_steps=p["steps"], epochs=epochs, precision=p["precision"],
                        seed=p["seed"], **({"compile": True} if p["compile"] else {}))
    config = RunConfig(task=p["task"], encoder=p["model"], data=data, train=train)
    prepared = check_run(config)
    fmt = get_format(prepared.task.format)
    L.seed_everything(p["seed"], workers=True, verbose=False)
    encoder, tokenizer = load_encoder(p["model"])
    datamodule = _datamodule(config, prepared, fmt, tokenizer)
    datamodule.setup("fit")  # tokenizes (or loads cached features) before the clock starts, as fit() does
    head = fmt.build_head(encoder, prepared.task, datamodule.labels)
    module = TaskModule(encoder, head, fmt, datamodule.labels, tokenizer.pad_token_id, train)
    if p["compile"]:  # as fit() does for TrainConfig.compile
        module.encoder.compile(dynamic=True)
    counter = BatchCounter(tokenizer.pad_token_id)
    trainer = _trainer(config, False, [_as_callback(counter)], has_validation=False)
    # fit() always has a logger and, with English validation, its own selection checkpoint; with the logger off
    # and no validation Lightning would add a default end-of-training checkpoint, which fit() never writes
    trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, ModelCheckpoint)]
    with _common.PeakMemory(cuda=torch.cuda.is_available()) as memory:
        start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
    assert trainer.global_step == p["steps"], (trainer.global_step, p["steps"])
    return {"wall_s": wall, "steady_s": counter.steady_s(), **counter.as_dict(), **memory.as_dict()}


class BatchCounter:
    """Counts padded and real tokens and times the steady state; a Lightning callback or a plain-loop helper."""

    def __init__(self, pad_id: int):
        self.pad_id, self.steps, self.padded, self.real, self.steady_start, self.end = pad_id, 0, 0, 0, None, None
        self.starts: list[float] = []  # each step's start

    def batch(self, input_ids) -> None:
        now = time.perf_counter()
        self.starts.append(now)
        if self.steps == WARMUP_STEPS:
            self.steady_start = now
        self.steps += 1
        self.padded += input_ids.numel()
        self.real = self.real + (input_ids != self.pad_id).sum()  # a tensor: no device sync per step

    def finish(self) -> None:
        self.end = time.perf_counter()

    def steady_s(self) -> float | None:
        return None if self.steady_start is None else self.end - self.steady_start

    def median_step_s(self) -> float | None:
        """The median duration of a step after the warm-up: unlike the total, a step slowed by another job on
        the machine moves it little. (On a GPU the host runs ahead of the device: use the totals there.)"""
        steps = [b - a for a, b in zip(self.starts, self.starts[1:] + [self.end])][WARMUP_STEPS:]
        return statistics.median(steps) if steps else None

    def as_dict(self) -> dict:
        return {"steps": self.steps, "padded_tokens": self.padded, "real_tokens": int(self.real),
                "steady_steps": self.steps - WARMUP_STEPS, "median_step_s": self.median_step_s()}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.batch(batch["input_ids"])

    def on_train_end(self, trainer, module):
        if trainer.strategy.root_device.type == "cuda":
            import torch

            torch.cuda.synchronize()
        self.finish()


def _as_callback(counter: BatchCounter):
    import lightning as L

    class Counting(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            counter.on_train_batch_start(trainer, module, batch, batch_idx)

        def on_train_end(self, trainer, module):
            counter.on_train_end(trainer, module)

    return Counting()


def read_plain_rows(p: dict) -> tuple[list[dict], str]:
    relative, kind = PLAIN_DATA[p["task"]]
    rows = [json.loads(line) for line in (Path(p["data_dir"]) / relative).read_text(encoding="utf-8").splitlines()]
    return rows, kind


def plain_features(rows, kind, tokenizer, max_length: int, pad_to_max: bool) -> list[dict]:
    padding = "max_length" if pad_to_max else False
    if kind == "classification":
        first, second = ("premise", "hypothesis") if "premise" in rows[0] else ("sentence1", "sentence2")
        encoded = tokenizer([r[first] for r in rows], [r[second] for r in rows], truncation=True,
                            max_length=max_length, padding=padding)
        return [{"input_ids": ids, "attention_mask": mask, "labels": int(r["label"])}
                for ids, mask, r in zip(encoded["input_ids"], encoded["attention_mask"], rows)]
    encoded = tokenizer([r["tokens"] for r in rows], is_split_into_words=True, truncation=True,
                        max_length=max_length, padding=padding)
    features = []
    for i, row in enumerate(rows):  # the label of each word on its first sub-token, -100 elsewhere
        labels, previous = [], None
        for word in encoded.word_ids(i):
            labels.append(row["ner_tags"][word] if word is not None and word != previous else -100)
            previous = word
        features.append({"input_ids": encoded["input_ids"][i], "attention_mask": encoded["attention_mask"][i],
                         "labels": labels})
    return features


def run_plain(p: dict) -> dict:
    """The loop a user would write with torch and transformers alone."""
    import torch
    import transformers
    from torch.utils.data import DataLoader
    from transformers import (AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer,
                              DataCollatorForTokenClassification, DataCollatorWithPadding, default_data_collator,
                              get_linear_schedule_with_warmup)

    from lightning_modules.encoders import resolve

    transformers.logging.set_verbosity_error()
    torch.manual_seed(p["seed"])
    folder = resolve(p["model"])
    rows, kind = read_plain_rows(p)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    pad_to_max = p["variant"] == "plain-pad-max"
    features = plain_features(rows, kind, tokenizer, p["max_length"], pad_to_max)
    if kind == "classification":
        model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=3 if p["task"] == "xnli" else 2)
        collate = DataCollatorWithPadding(tokenizer)
    else:
        model = AutoModelForTokenClassification.from_pretrained(folder, num_labels=7)
        collate = DataCollatorForTokenClassification(tokenizer)
    if pad_to_max:
        collate = default_data_collator
    dev = device()
    model.to(dev).train()
    if p["compile"]:
        model.compile(dynamic=True)
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "LayerNorm.bias")
    named = [(n, q) for n, q in model.named_parameters() if q.requires_grad]
    groups = [{"params": [q for n, q in named if not n.endswith(no_decay)], "weight_decay": 0.01},
              {"params": [q for n, q in named if n.endswith(no_decay)], "weight_decay": 0.0}]
    fused = {"fused": True} if p["variant"] == "plain-fused" else {}  # else torch's default implementation
    optimizer = torch.optim.AdamW(groups, lr=1e-5, eps=1e-8, **fused)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(p["steps"] * 0.1), p["steps"])
    loader = DataLoader(features, batch_size=p["batch_size"], shuffle=True, collate_fn=collate,
                        num_workers=p["num_workers"], pin_memory=dev == "cuda",
                        persistent_workers=p["num_workers"] > 0)
    autocast = torch.autocast(dev, dtype=torch.bfloat16, enabled=p["precision"].startswith("bf16"))
    counter = BatchCounter(tokenizer.pad_token_id)
    with _common.PeakMemory(cuda=dev == "cuda") as memory:
        start = time.perf_counter()
        step = 0
        while step < p["steps"]:
            for batch in loader:
                batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
                counter.batch(batch["input_ids"])
                with autocast:
                    loss = model(**batch).loss
                loss.backward()
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if step == p["steps"]:
                    break
        if dev == "cuda":
            torch.cuda.synchronize()
        counter.finish()
        wall = time.perf_counter() - start
    return {"wall_s": wall, "steady_s": counter.steady_s(), **counter.as_dict(), **memory.as_dict()}


def child(p: dict) -> dict:
    if p["variant"].startswith("plain"):
        result = run_plain(p)
    else:
        result = run_xstilts(p)
    examples = p["steps"] * p["batch_size"]
    result["examples_per_s"] = examples / result["wall_s"]
    if result["steady_s"]:
        result["steady_examples_per_s"] = result["steady_steps"] * p["batch_size"] / result["steady_s"]
    if result["median_step_s"]:
        result["median_step_examples_per_s"] = p["batch_size"] / result["median_step_s"]
    result["padding_fraction"] = 1 - result["real_tokens"] / result["padded_tokens"]
    return result


# ---------------------------------------------------------------------- the comparison (parent process)

KEYS = ["examples_per_s", "steady_examples_per_s", "median_step_examples_per_s", "wall_s", "median_step_s",
        "padded_tokens", "real_tokens", "padding_fraction", "peak_rss_mib", "peak_rss_growth_mib",
        "cuda_peak_allocated_mib"]


def main() -> None:
    args = parse_args()
    _common.limit_threads(args.threads)
    data_dir = _common.repeated_fixtures(args.repeat)
    train_rows = len((data_dir / PLAIN_DATA[args.task][0]).read_text().splitlines())
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    base = {"model": args.model, "task": args.task, "steps": args.steps, "batch_size": args.batch_size,
            "max_length": args.max_length, "data_dir": str(data_dir), "train_rows": train_rows,
            "precision": args.precision, "num_workers": args.num_workers, "compile": args.compile, "seed": args.seed,
            "threads": args.threads}
    # one untimed run of each kind first: converts the model, tokenizes and caches features
    for warm in {("plain" if v.startswith("plain") else "xstilts") for v in variants}:
        _common.run_child(__file__, {**base, "variant": warm, "steps": WARMUP_STEPS + 1})
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for repeat in range(args.repeats):
        for variant in variants:
            name, _, tweaks = variant.partition(":")
            overrides = dict(_parse_override(t) for t in tweaks.split(";") if t) if tweaks else {}
            result = _common.run_child(__file__, {**base, **overrides, "variant": name})
            runs[variant].append(result)
            print(f"  repeat {repeat + 1}/{args.repeats} {variant:<22} {result['examples_per_s']:8.1f} examples/s",
                  flush=True)
    summary = {v: _common.summarize(r, KEYS) for v, r in runs.items()}
    rows = [{"variant": variant, **{k: stats[k]["median"] for k in KEYS}} for variant, stats in summary.items()]
    # ratios of the whole runs' rates, and of the median steps' (the one a busy machine disturbs least)
    references = (("plain", "vs_plain"), ("plain-fused", "vs_plain_fused"), ("plain-pad-max", "vs_pad_max"))
    for key, suffix in (("examples_per_s", ""), ("median_step_examples_per_s", "_step")):
        reference = {row["variant"]: row[key] for row in rows}
        for row in rows:
            for other, label in references:
                if reference.get(other) and row[key]:
                    row[label + suffix] = row[key] / reference[other]
    print(f"\n{args.model} on {args.task}: {args.steps} steps of {args.batch_size}, max_length {args.max_length}, "
          f"{args.precision}, {device()}; medians of {args.repeats}")
    _common.print_table(rows, [("variant", "variant", ""), ("examples_per_s", "examples/s", ".1f"),
                               ("median_step_examples_per_s", "median step: ex/s", ".1f"),
                               ("vs_plain", "x plain", ".2f"), ("vs_plain_fused", "x plain-fused", ".2f"),
                               ("vs_pad_max", "x pad-max", ".2f"), ("vs_plain_step", "step x plain", ".2f"),
                               ("vs_plain_fused_step", "step x plain-fused", ".2f"),
                               ("vs_pad_max_step", "step x pad-max", ".2f"),
                               ("padding_fraction", "padding", ".0%"), ("peak_rss_mib", "peak RSS MiB", ".0f"),
                               ("peak_rss_growth_mib", "RSS growth MiB", ".0f"),
                               ("cuda_peak_allocated_mib", "CUDA peak MiB", ".0f")])
    name = f"train-{args.model}-{args.task}" + ("" if args.precision == "32-true" else f"-{args.precision}") + \
        ("-compile" if args.compile else "")
    _common.write_results(name, {"settings": {**base, "repeats": args.repeats, "variants": variants},
                                 "descriptions": VARIANTS, "table": rows, "summary": summary, "runs": runs})


def _parse_override(text: str):
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


if __name__ == "__main__":
    _common.main_or_child(main, child)
