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
    _add_fault_options(group)


def _add_fault_options(group) -> None:
    group.add_argument("--tracking-timeout", type=float,
                       help="seconds a tracking call may take, retries included, before it fails or the run goes to "
                            "the spool (default: $XSTILTS_TRACKING_TIMEOUT, else 60)")
    group.add_argument("--spool-dir", help="where a run waits when the tracking store is out of reach "
                                           "(default: $XSTILTS_SPOOL, else <xstilts cache>/spool)")


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
    _add_resume_options(group)


def _add_resume_options(group) -> None:
    group.add_argument("--checkpoint-every-steps", type=int,
                       help="resumable checkpoint every N optimizer steps (default: $XSTILTS_CHECKPOINT_EVERY_STEPS)")
    group.add_argument("--checkpoint-every-minutes", type=float,
                       help="resumable checkpoint every M minutes (default: $XSTILTS_CHECKPOINT_EVERY_MINUTES, else "
                            "30; 0: only on SIGTERM)")
    group.add_argument("--checkpoint-dir", help="where resumable checkpoints are kept (default: "
                                                "$XSTILTS_CHECKPOINT_DIR, else <xstilts cache>/resume)")


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
    _add_data_options(evaluate)
    _add_tracking_options(evaluate)

    sweep = commands.add_parser("sweep", help="run or resume the Optuna sweep of an experiment file")
    sweep.add_argument("experiment_file")
    sweep.add_argument("--storage", help="Optuna storage URL (default: sqlite in mlruns/; postgresql://… to share)")
    sweep.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    sweep.add_argument("--worker-index", type=int, default=0, help="distinct per worker across machines")
    sweep.add_argument("--tracking-uri")
    _add_fault_options(sweep)
    _add_resume_options(sweep)

    promote = commands.add_parser("promote", help="register the best checkpoint of a target task as its champion")
    promote.add_argument("task", nargs="?")
    promote.add_argument("--list", action="store_true", help="show each target's champion")
    promote.add_argument("--tracking-uri")
    _add_fault_options(promote)

    report = commands.add_parser("report", help="the intermediate x target table of an experiment, from MLflow")
    report.add_argument("experiment", nargs="+", help="experiment name(s) or YAML file(s); several side by side")
    report.add_argument("--out", help="output folder (default: mlruns/reports/<experiment>)")
    report.add_argument("--tracking-uri")
    _add_fault_options(report)

    sync = commands.add_parser("sync", help="send runs spooled while the tracking store was out of reach")
    sync.add_argument("--tracking-uri", help="only runs of this store (default: every spooled run, each to its own)")
    _add_fault_options(sync)

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
                      adversarial=args.adversarial)
    train_fields = ("lr", "epochs", "max_steps", "batch_size", "eval_batch_size", "accumulate", "warmup_ratio",
                    "weight_decay", "eval_every", "patience", "precision", "seed", "tuning", "lora_rank",
                    "compile")
    train = TrainConfig(**{f: getattr(args, f) for f in train_fields if hasattr(args, f)})
    return RunConfig(task=getattr(args, "task", ""), encoder=getattr(args, "encoder", "tiny-xlmr"), data=data,
                     train=train, tracking_uri=args.tracking_uri, experiment=args.experiment, run_name=args.run_name,
                     tracking_timeout=args.tracking_timeout, spool_dir=args.spool_dir,
                     checkpoint_every_steps=getattr(args, "checkpoint_every_steps", None),
                     checkpoint_every_minutes=getattr(args, "checkpoint_every_minutes", None),
                     checkpoint_dir=getattr(args, "checkpoint_dir", None))


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

        print(format_result(run_benchmark(args.checkpoint, args.benchmark, _run_config(args))))
        return
    result = evaluate(args.checkpoint, _run_config(args))
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
        return
    if not args.task:
        raise ValueError("promote needs a target task, or --list")
    result = promote(args.task, uri)
    verb = "promoted" if result.moved else "kept"
    print(f"{verb} models:/xstilts-{result.task}@champion = version {result.version} (run {result.run_id}, "
          f"English validation {result.score:.2f})")


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


def cmd_sync(args) -> None:
    from sweeps.tracking.spool import spool_root, sync
    from sweeps.tracking.store import tracking_uri

    root = spool_root(args.spool_dir)
    synced = sync(root, tracking_uri(args.tracking_uri) if args.tracking_uri else None)
    for run in synced:
        print(f"sent run {run.run_id}: {run.operations} operations, {run.status or 'still running: kept'}")
    print(f"{len(synced)} spooled run(s) sent from {root}" if synced else f"nothing spooled in {root}")


def cmd_ui(args) -> None:
    from sweeps.children import stop_group
    from sweeps.tracking.store import tracking_uri
    from sweeps.tracking.ui import start_server, wait_until_up

    address = f"http://127.0.0.1:{args.port}"
    server = start_server(tracking_uri(args.tracking_uri), args.port)
    try:
        wait_until_up(address, server)
        print(f"MLflow UI at {address} (Ctrl-C stops it)", flush=True)
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:  # done, Ctrl-C or SIGTERM: the server and its workers go too
        stop_group(server)


COMMANDS = {"tasks": cmd_tasks, "fit": cmd_fit, "evaluate": cmd_evaluate, "sweep": cmd_sweep,
            "promote": cmd_promote, "report": cmd_report, "sync": cmd_sync, "ui": cmd_ui, "models": cmd_models}
# errors a user can fix: printed as one line, not a traceback
USER_ERRORS = ("TaskError", "EncoderError", "FileNotFoundError", "E5ImportError", "ModuleNotFoundError",
               "ExperimentError")


TRACKING_UNAVAILABLE = 3  # exit status: the tracking store was out of reach (what could not be sent is spooled)


def quiet() -> None:
    """No per-file progress bars from datasets and the hub; no tokenizer thread pools fighting the DataLoader."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    quiet()
    from sweeps.runs import preemption
    from sweeps.tracking import faults

    faults.configure(getattr(args, "tracking_timeout", None))
    if getattr(args, "spool_dir", None):
        os.environ["XSTILTS_SPOOL"] = args.spool_dir  # sweep workers and every run of this command spool there
    for option, variable in (("checkpoint_every_steps", "XSTILTS_CHECKPOINT_EVERY_STEPS"),
                             ("checkpoint_every_minutes", "XSTILTS_CHECKPOINT_EVERY_MINUTES"),
                             ("checkpoint_dir", "XSTILTS_CHECKPOINT_DIR")):
        if getattr(args, option, None) is not None:
            os.environ[variable] = str(getattr(args, option))  # the sweep's phases and workers read them
    preemption.handle_sigterm()
    try:
        COMMANDS[args.command](args)
    except SystemExit as error:
        if not preemption.preempted(error):
            raise
        if args.command in ("fit", "sweep"):
            print(f"xstilts {args.command}: stopped by SIGTERM; the run is marked KILLED with its resumable "
                  f"checkpoint: the same command continues from it", file=sys.stderr)
        return preemption.PREEMPTED
    except Exception as error:
        if faults.unreachable(error):
            uri = getattr(args, "tracking_uri", None) or os.environ.get("MLFLOW_TRACKING_URI", "")
            known = faults.unavailable_in(error)
            message = str(known) if known is not None else (
                f"tracking store {uri} did not answer within {faults.timeout_seconds():.0f} s "
                f"({faults.first_line(error)})".replace("store  did", "store did"))
            print(f"xstilts {args.command}: error: {message}", file=sys.stderr)
            return TRACKING_UNAVAILABLE
        if type(error).__name__ not in USER_ERRORS and not isinstance(error, ValueError):
            raise
        print(f"xstilts {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
