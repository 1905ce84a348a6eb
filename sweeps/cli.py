"""The `xstilts` command. Start-up stays fast: every heavy import happens inside the command that needs it."""

from __future__ import annotations

import argparse
import os
import sys


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data-dir", help="local files in the hub layout (DIR/<dataset>/<config>/<split>.jsonl); "
                                          "'fixtures' for the bundled fixtures; default: the hub")
    group.add_argument("--tasks-file", action="append", default=[], help="extra task declarations (YAML)")
    group.add_argument("--languages", type=_csv, default=(), help="evaluation languages, comma-separated")
    group.add_argument("--eval-splits", type=_csv, default=("validation", "test"))
    group.add_argument("--max-length", type=int, default=256)
    group.add_argument("--doc-stride", type=int, default=128)
    group.add_argument("--max-train-examples", type=int)
    group.add_argument("--max-eval-examples", type=int)
    group.add_argument("--streaming", action="store_true", help="stream the training data (needs --max-steps)")
    group.add_argument("--num-workers", type=int, default=0)
    group.add_argument("--group-by-length", action="store_true",
                       help="training batches of examples of similar lengths (less padding, faster)")
    group.add_argument("--seqeval", choices=["0.0", "1.x"],
                       help="tagging chunk F1 as seqeval 0.0.x computes it (XTREME's published numbers; the "
                            "default) or as seqeval 1.x")
    robustness = parser.add_argument_group("robustness (final evaluation only; logs robustness/<name>/<lang>/"
                                           "<metric>_drop = clean - perturbed)")
    robustness.add_argument("--perturb", type=_csv, default=(), metavar="NAMES",
                            help="also evaluate perturbed copies of every evaluation set, comma-separated: typos, "
                                 "word_order, casing, code_switch")
    robustness.add_argument("--perturb-seed", type=int, default=0)
    robustness.add_argument("--dictionary", help="code_switch's dictionary: JSON like datamodules/dictionaries/"
                                                 "en-de-fr-es.json (the default), or MUSE lines in <src>-<tgt>.txt")
    robustness.add_argument("--adversarial", type=_csv, default=(), metavar="TASKS",
                            help="also evaluate on these registered tasks of the same format and labels, e.g. "
                                 "anli_plus for an XNLI or MNLI checkpoint")


def _add_tracking_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("tracking")
    group.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite in mlruns/)")
    group.add_argument("--experiment", default="xstilts")
    group.add_argument("--run-name")


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training")
    group.add_argument("--encoder", default="tiny-xlmr",
                       help="hub id, local folder, xstilts checkpoint, models:/… URI, or a built-in: "
                            "tiny-xlmr, multilingual-e5-small")
    group.add_argument("--lr", type=float, default=1e-5)
    group.add_argument("--epochs", type=int, default=3)
    group.add_argument("--max-steps", type=int, default=-1)
    group.add_argument("--batch-size", type=int, default=32)
    group.add_argument("--eval-batch-size", type=int, default=64)
    group.add_argument("--accumulate", type=int, default=1, help="gradient accumulation steps")
    group.add_argument("--warmup-ratio", type=float, default=0.1)
    group.add_argument("--weight-decay", type=float, default=0.01)
    group.add_argument("--eval-every", type=int, help="validate on English every N steps (default: each epoch)")
    group.add_argument("--patience", type=int, help="early stopping patience, in validations")
    group.add_argument("--precision", default="32-true", help="Lightning precision, e.g. bf16-mixed on GPU")
    group.add_argument("--compile", action="store_true",
                       help="torch.compile the encoder (GPU; on CPU it only adds a minute or two of compiling)")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--tuning", default="full", choices=["full", "frozen_embeddings", "lora", "ia3"],
                       help="what trains besides the head (lora/ia3: peft adapters, merged into the checkpoint)")
    group.add_argument("--lora-rank", type=int, default=8)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="xstilts", description="Cross-lingual intermediate-task training "
                                   "(X-STILTs) on XTREME, tracked in MLflow.")
    commands = root.add_subparsers(dest="command", required=True)

    tasks = commands.add_parser("tasks", help="list the registered tasks")
    tasks.add_argument("--tasks-file", action="append", default=[])

    fit = commands.add_parser("fit", help="train on one task (English), then evaluate every language zero-shot")
    fit.add_argument("task")
    _add_train_options(fit)
    _add_data_options(fit)
    _add_tracking_options(fit)

    evaluate = commands.add_parser("evaluate", help="evaluate a checkpoint on every language of a task")
    evaluate.add_argument("checkpoint", help="checkpoint folder, runs:/<run id>/checkpoint or models:/<name>@<alias>")
    evaluate.add_argument("--task", default="", help="default: the task the checkpoint was trained for")
    evaluate.add_argument("--benchmark", choices=["xtreme", "xtreme-r"],
                          help="every task of the benchmark the checkpoint needs no training for, and the score")
    evaluate.add_argument("--eval-batch-size", type=int, default=64)
    evaluate.add_argument("--predictions", metavar="DIR",
                          help="also write the XTREME submission files (<task>/test-<lang>.<suffix>) into DIR")
    _add_data_options(evaluate)
    _add_tracking_options(evaluate)

    sweep = commands.add_parser("sweep", help="run or resume the Optuna sweep of an experiment file")
    sweep.add_argument("experiment_file")
    sweep.add_argument("--storage", help="Optuna storage URL (default: sqlite in mlruns/; postgresql://… to share)")
    sweep.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    sweep.add_argument("--worker-index", type=int, default=0, help="distinct per worker across machines")
    sweep.add_argument("--tracking-uri")

    promote = commands.add_parser("promote", help="register the best checkpoint of a target task as its champion")
    promote.add_argument("task", nargs="?")
    promote.add_argument("--list", action="store_true", help="show each target's champion")
    promote.add_argument("--predictions", metavar="DIR",
                         help="also write the champion's XTREME submission files into DIR (with --list: every "
                              "champion's)")
    promote.add_argument("--tracking-uri")

    report = commands.add_parser("report", help="the intermediate x target table of an experiment, from MLflow")
    report.add_argument("experiment", nargs="+", help="experiment name(s) or YAML file(s); several side by side")
    report.add_argument("--out", help="output folder (default: mlruns/reports/<experiment>)")
    report.add_argument("--tracking-uri")

    score = commands.add_parser("score", help="score a folder of predictions (a run's tables or XTREME submission "
                                              "files) per task and language, and the XTREME / XTREME-R scores")
    score.add_argument("predictions", help="folder, or runs:/<run id> (its predictions artifacts)")
    score.add_argument("--gold", help="official label files in the same layout, a data folder in the hub layout, or "
                                      "'fixtures' (default: the tables' own gold; the hub for official files)")
    score.add_argument("--tasks-file", action="append", default=[])
    score.add_argument("--seqeval", choices=["0.0", "1.x"], help="tagging chunk F1 behaviour (default: 0.0)")
    score.add_argument("--out", help="also write the scores as JSON here")
    score.add_argument("--tracking-uri")

    compare = commands.add_parser("compare", help="two runs' predictions: per language the score difference and the "
                                                  "examples where they disagree (all of them logged to MLflow)")
    compare.add_argument("run_a", help="run id or runs:/<run id>")
    compare.add_argument("run_b")
    compare.add_argument("--show", type=int, default=5, help="disagreements shown per language (default 5)")
    compare.add_argument("--experiment", default="xstilts-compare", help="where the comparison run is logged")
    compare.add_argument("--tasks-file", action="append", default=[])
    compare.add_argument("--tracking-uri")

    ui = commands.add_parser("ui", help="start the MLflow UI on 127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--tracking-uri")

    models = commands.add_parser("models", help="prepare built-in encoders in the local cache")
    models.add_argument("action", choices=["build-tiny", "import-e5-small", "where"])
    return root


def _run_config(args):
    from sweeps.runs.run import DataConfig, RunConfig, TrainConfig

    data = DataConfig(data_dir=args.data_dir, tasks_files=tuple(args.tasks_file), languages=args.languages,
                      eval_splits=args.eval_splits, max_length=args.max_length, doc_stride=args.doc_stride,
                      max_train_examples=args.max_train_examples, max_eval_examples=args.max_eval_examples,
                      streaming=args.streaming, num_workers=args.num_workers,
                      group_by_length=args.group_by_length, perturbations=args.perturb,
                      perturb_seed=args.perturb_seed, perturb_dictionary=args.dictionary,
                      adversarial=args.adversarial, seqeval=args.seqeval)
    train_fields = ("lr", "epochs", "max_steps", "batch_size", "eval_batch_size", "accumulate", "warmup_ratio",
                    "weight_decay", "eval_every", "patience", "precision", "seed", "tuning", "lora_rank",
                    "compile")
    train = TrainConfig(**{f: getattr(args, f) for f in train_fields if hasattr(args, f)})
    return RunConfig(task=getattr(args, "task", ""), encoder=getattr(args, "encoder", "tiny-xlmr"), data=data,
                     train=train, tracking_uri=args.tracking_uri, experiment=args.experiment, run_name=args.run_name)


def cmd_tasks(args) -> None:
    from datamodules.tasks import load_registry

    registry = load_registry(args.tasks_file)
    rows = [("task", "kind", "format", "metric", "data source", "XTREME", "XTREME-R", "all", "languages")]
    for spec in registry.values():
        source = ", ".join(sorted({s.dataset for s in spec.sources}))
        trained = f" (train: {spec.train_task})" if spec.train_task else ""
        counts = [str(len(spec.benchmark_languages(b))) if b in spec.benchmarks else "-" for b in ("xtreme", "xtreme-r")]
        rows.append((spec.name, spec.kind, spec.format, spec.metric, source + trained, *counts,
                     str(len(spec.languages)), " ".join(spec.languages)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def print_scores(scores: dict[str, float]) -> None:
    """The per-language table of a run: one row per split and language, one column per metric."""
    table: dict[tuple[str, str], dict[str, float]] = {}
    for key, value in scores.items():
        split, lang, metric = key.rsplit("/", 2) if key.count("/") >= 2 else (key, "", "")
        table.setdefault((split, lang), {})[metric] = value
    metrics = sorted({m for row in table.values() for m in row})
    print(f"{'split':<12}{'language':<16}" + "".join(f"{m:>14}" for m in metrics))
    for (split, lang), row in table.items():
        print(f"{split:<12}{lang:<16}" + "".join(f"{row[m]:>14.2f}" if m in row else f"{'':>14}" for m in metrics))


def cmd_fit(args) -> None:
    from sweeps.runs.run import fit

    result = fit(_run_config(args))
    print_scores(result.scores)
    print(f"\nMLflow run {result.run_id}; checkpoint {result.checkpoint_uri}")


def cmd_evaluate(args) -> None:
    from sweeps.runs.run import evaluate

    if args.benchmark:
        from sweeps.reporting.benchmark import format_result, run_benchmark

        print(format_result(run_benchmark(args.checkpoint, args.benchmark, _run_config(args), args.predictions)))
        return
    result = evaluate(args.checkpoint, _run_config(args), args.predictions)
    print_scores(result.scores)
    print(f"\nMLflow run {result.run_id}")


def cmd_models(args) -> None:
    from lightning_modules.encoders import cache_dir, resolve

    if args.action == "where":
        print(cache_dir() / "models")
        return
    print(resolve({"build-tiny": "tiny-xlmr", "import-e5-small": "multilingual-e5-small"}[args.action]))


def cmd_sweep(args) -> None:
    from sweeps.engine.sweep import launch_workers, run_sweep

    if args.workers > 1:
        code = launch_workers(args.experiment_file, args.workers, args.storage, args.tracking_uri)
        if code:
            raise RuntimeError(f"a sweep worker exited with status {code}")
        return
    parent = run_sweep(args.experiment_file, args.storage, args.tracking_uri, args.worker_index)
    print(f"sweep finished: MLflow parent run {parent}")


def cmd_promote(args) -> None:
    from sweeps.tracking.registry import champions, promote
    from sweeps.tracking.store import tracking_uri

    uri = tracking_uri(args.tracking_uri)
    if args.list:
        for row in champions(uri):
            print("  ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
            if args.predictions:
                _write_submission(uri, row["task"], row["run_id"], args.predictions)
        return
    if not args.task:
        raise ValueError("promote needs a target task, or --list")
    result = promote(args.task, uri)
    verb = "promoted" if result.moved else "kept"
    print(f"{verb} models:/xstilts-{result.task}@champion = version {result.version} (run {result.run_id}, "
          f"English validation {result.score:.2f})")
    if args.predictions:
        _write_submission(uri, result.task, result.run_id, args.predictions)


def _write_submission(uri: str, task: str, run_id: str, folder: str) -> None:
    import mlflow

    from datamodules.tasks import get_task, load_registry
    from sweeps.reporting.submission import write_from_run

    written = write_from_run(mlflow.MlflowClient(uri), run_id, get_task(task, load_registry()), folder)
    print(f"{task}: wrote {len(written)} submission files into {folder}")


def cmd_score(args) -> None:
    import json

    from datamodules.tasks import load_registry
    from sweeps.reporting.benchmark import format_result
    from sweeps.reporting.score import benchmarks, format_scores, score

    results = score(args.predictions, args.gold, args.tasks_file, args.tracking_uri, args.seqeval)
    print(format_scores(results))
    aggregated = benchmarks(results, load_registry(args.tasks_file), args.predictions)
    for result in aggregated:
        if result.tasks:
            print("\n" + format_result(result))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"scores": [vars(r) for r in results], "benchmarks": [r.to_json() for r in aggregated]},
                      handle, indent=2)


def cmd_report(args) -> None:
    from pathlib import Path

    from sweeps.reporting.report import build
    from sweeps.tracking.store import default_store, tracking_uri

    from sweeps.engine.experiment import load_experiment

    names = [load_experiment(n).name if n.endswith((".yaml", ".yml")) else n for n in args.experiment]
    out = Path(args.out) if args.out else default_store() / "reports" / "+".join(names)
    paths = build(names, tracking_uri(args.tracking_uri), out)
    print(paths["markdown"].read_text())
    print("written: " + ", ".join(str(p) for p in paths.values()))


def cmd_compare(args) -> None:
    from datamodules.tasks import load_registry
    from sweeps.reporting.benchmark import score_metrics
    from sweeps.reporting.compare import compare, format_comparison, log, run_id_of
    from sweeps.tracking.store import tracking_uri

    uri = tracking_uri(args.tracking_uri)
    run_a, run_b = run_id_of(args.run_a), run_id_of(args.run_b)
    results = compare(run_a, run_b, uri, args.tasks_file)
    registry = load_registry(args.tasks_file)
    metrics = {c.task: score_metrics(registry[c.task].format, registry[c.task].metric) for c in results}
    print(format_comparison(results, metrics, args.show))
    print(f"\nall disagreements: MLflow run {log(results, run_a, run_b, uri, args.experiment)} (compare/…)")


def cmd_ui(args) -> None:
    from sweeps.tracking.store import tracking_uri
    from sweeps.tracking.ui import start_server, wait_until_up

    address = f"http://127.0.0.1:{args.port}"
    server = start_server(tracking_uri(args.tracking_uri), args.port)
    wait_until_up(address, server)
    print(f"MLflow UI at {address} (Ctrl-C stops it)", flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:
        server.terminate()


COMMANDS = {"tasks": cmd_tasks, "fit": cmd_fit, "evaluate": cmd_evaluate, "sweep": cmd_sweep,
            "promote": cmd_promote, "report": cmd_report, "ui": cmd_ui, "models": cmd_models, "score": cmd_score,
            "compare": cmd_compare}
# errors a user can fix: printed as one line, not a traceback
USER_ERRORS = ("TaskError", "EncoderError", "FileNotFoundError", "E5ImportError", "ModuleNotFoundError",
               "ExperimentError")


def quiet() -> None:
    """No per-file progress bars from datasets and the hub; no tokenizer thread pools fighting the DataLoader."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    quiet()
    try:
        COMMANDS[args.command](args)
    except Exception as error:
        if type(error).__name__ not in USER_ERRORS and not isinstance(error, ValueError):
            raise
        print(f"xstilts {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
