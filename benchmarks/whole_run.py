"""The whole run: `xstilts fit` (English validation every --eval-every steps, the best weights kept and reloaded,
validation and test on every language, predictions and scores logged to MLflow, the checkpoint logged as an artifact)
against a plain PyTorch + transformers + MLflow script written below that does the same work:

- the same model folder, English training rows, batch size, truncation, dynamic padding, AdamW groups (fused), linear
  schedule and number of steps;
- validation on English every --eval-every steps with seqeval's F1 (PAN-X's metric), the state dict of the best saved
  to disk and loaded back after training;
- validation and test on every language with data (48 for PAN-X: `_common.fill_languages`), each
  set's per-example predictions logged (xstilts: as tables the MLflow UI shows, in one upload; the plain script: as
  Parquet files in one upload, cheaper than `mlflow.log_table` per set) and its F1 as a metric;
- MLflow: the parameters, train/loss every 10 steps, the validation score at each validation, the final checkpoint
  (`save_pretrained` of model and tokenizer) logged as artifacts, to a sqlite store.

    python benchmarks/whole_run.py --repeats 5 --threads 1

xstilts runs as the `xstilts fit` command (`sweeps.cli.main`, then its exit without the interpreter's teardown); the
plain script as a script. Each run is a fresh child process; the variants run interleaved. Two times are reported per
run: the process as a whole (start to exit, what a user waits for) and the run itself (after the imports of the
libraries: what the command's or the script's body takes). xstilts reads the tokenized data from its feature cache
(warm after the untimed first run, as in any phase after a sweep's first); the plain script tokenizes in every run,
so its tokenizing time is measured apart and the ratio is also given against the plain run without it (`plain's
data ready`: the fairest baseline).
Writes benchmarks/results/whole_run-<model>-<task>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (sets the offline environment before anything imports datasets)
from train import plain_features  # noqa: E402  (the plain loop's tokenizing: each word's label on its first sub-token)

PANX = "google/xtreme/PAN-X.{lang}/{split}.jsonl"
LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]  # PAN-X's ner_tags, as the hub names them
SPLITS = ("validation", "test")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-xlmr", help="tiny-xlmr or multilingual-e5-small")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=5, help="fixture rows repeated this many times")
    parser.add_argument("--repeats", type=int, default=3, help="measured runs of each variant")
    parser.add_argument("--seed", type=int, default=0)
    _common.add_threads_option(parser)
    return parser.parse_args()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------------- one run (child process)


def run_xstilts(p: dict) -> dict:
    """`xstilts fit` as the command runs it (sweeps.cli.main), its run timed after the libraries it imports."""
    import datasets  # noqa: F401  (the libraries fit() imports when it runs: their import is the process' start)
    import lightning.pytorch  # noqa: F401
    import mlflow
    import transformers  # noqa: F401

    from sweeps.cli import main

    argv = ["fit", "panx", "--encoder", p["model"], "--data-dir", p["data_dir"], "--max-length", str(p["max_length"]),
            "--eval-splits", ",".join(SPLITS), "--batch-size", str(p["batch_size"]), "--max-steps", str(p["steps"]),
            "--epochs", str(p["epochs"]), "--seed", str(p["seed"]), "--eval-every", str(p["eval_every"]),
            "--languages", ",".join(p["languages"]), "--tracking-uri", p["tracking_uri"], "--experiment", "whole-run"]
    start, cpu = time.perf_counter(), cpu_seconds()
    if main(argv) != 0:
        raise SystemExit(f"xstilts {' '.join(argv)} failed")
    run_s, run_cpu_s = time.perf_counter() - start, cpu_seconds() - cpu
    client = mlflow.MlflowClient(p["tracking_uri"])
    run = client.search_runs([client.get_experiment_by_name("whole-run").experiment_id], max_results=1)[0]
    scores = [k for k in run.data.metrics if k.count("/") == 2 and k.endswith("/f1") and k.split("/")[0] in SPLITS
              and k.split("/")[1] in p["languages"]]
    return {"run_s": run_s, "run_cpu_s": run_cpu_s, "tokenize_s": 0.0, "evaluated_sets": len(scores),
            "best_validation": run.data.metrics["selection/score"]}


def read_rows(data_dir: str, lang: str, split: str) -> list[dict]:
    path = Path(data_dir) / PANX.format(lang=lang, split=split)
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def evaluate_plain(model, features, rows, collate, batch_size: int) -> tuple[float, list[dict]]:
    """seqeval F1 over the words kept after truncation, and one prediction record per sentence."""
    import torch
    from seqeval.metrics import f1_score

    model.eval()
    gold, predicted, records = [], [], []
    with torch.inference_mode():
        for start in range(0, len(features), batch_size):
            batch = collate(features[start:start + batch_size])
            labels = batch.pop("labels")
            best = model(**batch).logits.argmax(-1)
            for row, sentence_labels, sentence_best in zip(rows[start:start + batch_size], labels, best):
                kept = sentence_labels != -100
                words_gold = [LABELS[t] for t in sentence_labels[kept].tolist()]
                words_predicted = [LABELS[t] for t in sentence_best[kept].tolist()]
                gold.append(words_gold)
                predicted.append(words_predicted)
                records.append({"tokens": row["tokens"][:len(words_gold)], "gold": words_gold,
                                "predicted": words_predicted})
    model.train()
    return 100 * f1_score(gold, predicted), records


def run_plain(p: dict) -> dict:
    """The script a user would write with torch, transformers and MLflow alone."""
    import mlflow
    import pandas as pd
    import torch
    import transformers
    from torch.utils.data import DataLoader
    from transformers import AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification
    from transformers import get_linear_schedule_with_warmup

    from lightning_modules.encoders import resolve

    start, cpu = time.perf_counter(), cpu_seconds()
    transformers.logging.set_verbosity_error()
    torch.manual_seed(p["seed"])
    folder = resolve(p["model"])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForTokenClassification.from_pretrained(folder, num_labels=len(LABELS))
    collate = DataCollatorForTokenClassification(tokenizer, return_tensors="pt")
    tokenizing = time.perf_counter()
    train_features = plain_features(read_rows(p["data_dir"], "en", "train"), "tagging", tokenizer, p["max_length"],
                                    pad_to_max=False)
    eval_sets = {}
    for lang in p["languages"]:
        for split in SPLITS:
            rows = read_rows(p["data_dir"], lang, split)
            eval_sets[split, lang] = rows, plain_features(rows, "tagging", tokenizer, p["max_length"], pad_to_max=False)
    tokenize_s = time.perf_counter() - tokenizing

    mlflow.set_tracking_uri(p["tracking_uri"])
    mlflow.set_experiment("whole-run-plain")
    with mlflow.start_run(), tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params({"model": p["model"], "lr": 1e-5, "batch_size": p["batch_size"], "steps": p["steps"],
                           "max_length": p["max_length"], "eval_every": p["eval_every"], "seed": p["seed"]})
        no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "LayerNorm.bias")
        named = [(n, q) for n, q in model.named_parameters() if q.requires_grad]
        groups = [{"params": [q for n, q in named if not n.endswith(no_decay)], "weight_decay": 0.01},
                  {"params": [q for n, q in named if n.endswith(no_decay)], "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(groups, lr=1e-5, eps=1e-8, fused=True)
        scheduler = get_linear_schedule_with_warmup(optimizer, int(p["steps"] * 0.1), p["steps"])
        loader = DataLoader(train_features, batch_size=p["batch_size"], shuffle=True, collate_fn=collate)
        validation_rows, validation = eval_sets["validation", "en"]
        best_score, best_path, step = -1.0, Path(tmp) / "best.pt", 0
        model.train()
        while step < p["steps"]:
            for batch in loader:
                loss = model(**batch).loss
                loss.backward()
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if step % 10 == 0:
                    mlflow.log_metric("train/loss", loss.item(), step=step)
                if step % p["eval_every"] == 0 or step == p["steps"]:
                    score, _ = evaluate_plain(model, validation, validation_rows, collate, 64)
                    mlflow.log_metric("val/en/f1", score, step=step)
                    if score > best_score:
                        best_score = score
                        torch.save(model.state_dict(), best_path)
                if step == p["steps"]:
                    break
        model.load_state_dict(torch.load(best_path, weights_only=True))
        scores, predictions = {}, Path(tmp) / "predictions"
        for (split, lang), (rows, features) in eval_sets.items():
            score, records = evaluate_plain(model, features, rows, collate, 64)
            scores[f"{split}/{lang}/f1"] = score
            (predictions / "panx" / split).mkdir(parents=True, exist_ok=True)
            pd.DataFrame(records).to_parquet(predictions / "panx" / split / f"{lang}.parquet", index=False)
        mlflow.log_artifacts(str(predictions), "predictions")  # one upload; mlflow.log_table per set costs more
        mlflow.log_metrics(scores)
        checkpoint = Path(tmp) / "checkpoint"
        model.save_pretrained(checkpoint)
        tokenizer.save_pretrained(checkpoint)
        mlflow.log_artifacts(str(checkpoint), "checkpoint")
    return {"run_s": time.perf_counter() - start, "run_cpu_s": cpu_seconds() - cpu, "tokenize_s": tokenize_s,
            "evaluated_sets": len(scores), "best_validation": best_score}


def child(p: dict) -> dict:
    """One run; xstilts' leaves as the `xstilts` command does, without the interpreter's teardown."""
    if p["variant"] == "plain":
        return run_plain(p)
    from sweeps.cli import leave

    print(_common.RESULT_PREFIX + json.dumps(run_xstilts(p)), flush=True)
    leave(0)


# ---------------------------------------------------------------------- the comparison (parent process)


def timed_child(params: dict) -> dict:
    start = time.perf_counter()
    result = _common.run_child(__file__, params)
    result["process_wall_s"] = time.perf_counter() - start  # interpreter start to exit, as a user waits for it
    return result


def main() -> None:
    args = parse_args()
    _common.limit_threads(args.threads)
    data_dir = _common.repeated_fixtures(args.repeat, only=("google/xtreme/PAN-X",))
    languages = _common.fill_languages(data_dir, "panx")
    train_rows = len((data_dir / PANX.format(lang="en", split="train")).read_text().splitlines())
    with tempfile.TemporaryDirectory(prefix="xstilts-bench-") as tmp:
        base = {"model": args.model, "steps": args.steps, "batch_size": args.batch_size,
                "eval_every": args.eval_every, "max_length": args.max_length, "data_dir": str(data_dir),
                "languages": languages, "epochs": math.ceil(args.steps * args.batch_size / train_rows) + 1,
                "seed": args.seed, "tracking_uri": f"sqlite:///{tmp}/mlflow.db"}
        variants = ("plain", "xstilts")
        for variant in variants:  # untimed: model conversion, feature cache, store creation, byte-code
            timed_child({**base, "variant": variant})
        runs: dict[str, list[dict]] = {v: [] for v in variants}
        for repeat in range(args.repeats):
            for variant in variants:
                result = timed_child({**base, "variant": variant})
                runs[variant].append(result)
                print(f"  repeat {repeat + 1}/{args.repeats} {variant:<8} process {result['process_wall_s']:6.2f} s, "
                      f"run {result['run_s']:6.2f} s (tokenizing {result['tokenize_s']:.2f} s), "
                      f"{result['evaluated_sets']} sets evaluated", flush=True)
    for result in runs["plain"]:
        result["run_data_ready_s"] = result["run_s"] - result["tokenize_s"]
        result["process_data_ready_s"] = result["process_wall_s"] - result["tokenize_s"]
    # ratio > 1: xstilts faster; each repeat's pair ran back to back, so its ratio cancels load between repeats
    pairs = list(zip(runs["plain"], runs["xstilts"]))
    ratios = {name: _common.median([plain[key] / ours[ours_key] for plain, ours in pairs])
              for name, key, ours_key in (("process", "process_wall_s", "process_wall_s"),
                                          ("process, plain's data ready", "process_data_ready_s", "process_wall_s"),
                                          ("run", "run_s", "run_s"),
                                          ("run, plain's data ready", "run_data_ready_s", "run_s"),
                                          ("run CPU", "run_cpu_s", "run_cpu_s"))}
    keys = ["process_wall_s", "run_s", "run_cpu_s", "tokenize_s", "evaluated_sets", "best_validation"]
    summary = {v: _common.summarize(r, keys) for v, r in runs.items()}
    rows = [{"variant": v, **{k: s[k]["median"] for k in keys}} for v, s in summary.items()]
    print(f"\n{args.model} on PAN-X: {args.steps} steps of {args.batch_size}, validation every {args.eval_every}, "
          f"{len(languages)} languages x {len(SPLITS)} splits evaluated; medians of {args.repeats}")
    _common.print_table(rows, [("variant", "variant", ""), ("process_wall_s", "process s", ".2f"),
                               ("run_s", "run s", ".2f"), ("run_cpu_s", "run CPU s", ".2f"),
                               ("tokenize_s", "tokenizing s", ".2f"), ("evaluated_sets", "sets", ""),
                               ("best_validation", "best val F1", ".1f")])
    print("xstilts x plain (median of the pairs' ratios; > 1: xstilts faster): "
          + ", ".join(f"{name} {ratio:.2f}x" for name, ratio in ratios.items()))
    _common.write_results(f"whole_run-{args.model}-panx", {"settings": {**vars(args), "languages": languages},
                                                           "table": rows, "ratios": ratios, "runs": runs})


if __name__ == "__main__":
    _common.main_or_child(main, child)
