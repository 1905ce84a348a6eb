"""The `xstilts` command. Start-up stays fast: every heavy import happens inside the command that needs it."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

from sweeps.config.errors import ConfigError
from sweeps.config.schema import KEEP_MODES, safe_name
from sweeps.config.secrets import STORAGE_ENV, redact


class OneLineParser(argparse.ArgumentParser):
    """A usage error is one line on stderr (the flag and what is wrong) and exit code 2; --help shows the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    from sweeps.config.flags import add_flags
    from sweeps.config.schema import (DataConfig, PromoteConfig, ReportConfig, ResumeConfig, RunConfig, SweepConfig,
                                      TrackingConfig, TrainConfig)

    root = OneLineParser(prog="xstilts", description="Cross-lingual intermediate-task training "
                                   "(X-STILTs) on XTREME, tracked in MLflow.")
    commands = root.add_subparsers(dest="command", required=True)

    tasks = commands.add_parser("tasks", help="list the registered tasks")
    add_flags(tasks, DataConfig, "data", only=("tasks_files",))

    fit = commands.add_parser("fit", help="train on one task (English), then evaluate every language zero-shot")
    fit.add_argument("task")
    add_flags(fit, RunConfig, "encoder", only=("encoder",))
    add_flags(fit, TrainConfig, "training")
    add_flags(fit, DataConfig, "data")
    add_flags(fit, TrackingConfig, "tracking")
    add_flags(fit, ResumeConfig, "preemption")

    evaluate = commands.add_parser("evaluate", help="evaluate a checkpoint on every language of a task")
    evaluate.add_argument("checkpoint", help="checkpoint folder, runs:/<run id>/checkpoint or models:/<name>@<alias>")
    evaluate.add_argument("--task", default="", help="default: the task the checkpoint was trained for")
    evaluate.add_argument("--benchmark", choices=["xtreme", "xtreme-r"],
                          help="every task of the benchmark the checkpoint needs no training for, and the score")
    add_flags(evaluate, TrainConfig, "evaluation", only=("eval_batch_size", "precision"))
    evaluate.add_argument("--predictions", metavar="DIR",
                          help="also write the XTREME submission files (<task>/test-<lang>.<suffix>) into DIR")
    add_flags(evaluate, DataConfig, "data")
    add_flags(evaluate, TrackingConfig, "tracking")

    sweep = commands.add_parser("sweep", help="run or resume the Optuna sweep of an experiment file")
    sweep.add_argument("experiment_file")
    add_flags(sweep, SweepConfig, "sweep")
    add_flags(sweep, TrackingConfig, "tracking", only=("tracking_timeout", "spool_dir", "artifact_root",
                                                       "system_metrics_interval"))
    add_flags(sweep, ResumeConfig, "preemption")

    promote = commands.add_parser("promote", help="register the best checkpoint of a target task as its champion")
    promote.add_argument("task", nargs="?")
    promote.add_argument("--list", action="store_true", help="show each target's champion")
    promote.add_argument("--predictions", metavar="DIR",
                         help="also write the champion's XTREME submission files into DIR (with --list: every "
                              "champion's)")
    add_flags(promote, PromoteConfig, "promotion")
    add_flags(promote, TrackingConfig, "tracking", only=("tracking_uri", "tracking_timeout", "spool_dir"))

    report = commands.add_parser("report", help="the intermediate x target table of an experiment, from MLflow")
    report.add_argument("experiment", nargs="+", help="experiment name(s) or YAML file(s); several side by side")
    report.add_argument("--out", help="output folder (default: mlruns/reports/<experiment>)")
    add_flags(report, ReportConfig, "report")
    add_flags(report, TrackingConfig, "tracking", only=("tracking_uri", "tracking_timeout", "spool_dir"))

    score = commands.add_parser("score", help="score a folder of predictions (a run's tables or XTREME submission "
                                              "files) per task and language, and the XTREME / XTREME-R scores")
    score.add_argument("predictions", help="folder, or runs:/<run id> (its predictions artifacts)")
    score.add_argument("--gold", help="official label files in the same layout, a data folder in the hub layout, or "
                                      "'fixtures' (default: the tables' own gold; the hub for official files)")
    score.add_argument("--out", help="also write the scores as JSON here")
    add_flags(score, DataConfig, "data", only=("tasks_files", "seqeval"))
    add_flags(score, TrackingConfig, "tracking", only=("tracking_uri",))

    compare = commands.add_parser("compare", help="two runs' predictions: per language the score difference and the "
                                                  "examples where they disagree (all of them logged to MLflow)")
    compare.add_argument("run_a", help="run id or runs:/<run id>")
    compare.add_argument("run_b")
    compare.add_argument("--show", type=int, default=5, help="disagreements shown per language (default 5)")
    compare.add_argument("--experiment", default="xstilts-compare", help="where the comparison run is logged")
    add_flags(compare, DataConfig, "data", only=("tasks_files",))
    add_flags(compare, TrackingConfig, "tracking", only=("tracking_uri",))

    gc = commands.add_parser("gc", help="delete the checkpoints retention does not keep (train.keep; dry run: "
                                        "lists them and their bytes)")
    gc.add_argument("experiment", nargs="*", help="MLflow experiment name(s) (default: every experiment)")
    gc.add_argument("--yes", action="store_true", help="delete them (default: only list them)")
    gc.add_argument("--keep", choices=KEEP_MODES, help="apply this instead of each run's train.keep (e.g. best "
                                                       "after a sweep that kept all)")
    add_flags(gc, TrackingConfig, "tracking", only=("tracking_uri", "tracking_timeout"))

    du = commands.add_parser("du", help="bytes per experiment and phase: artifacts in the store, checkpoints in "
                                        "the local cache")
    du.add_argument("experiment", nargs="*", help="MLflow experiment name(s) (default: every experiment)")
    add_flags(du, TrackingConfig, "tracking", only=("tracking_uri", "tracking_timeout"))

    sync = commands.add_parser("sync", help="send runs spooled while the tracking store was out of reach")
    sync.add_argument("--tracking-uri", help="only runs of this store (default: every spooled run, each to its own)")
    add_flags(sync, TrackingConfig, "tracking", only=("tracking_timeout", "spool_dir"))

    ui = commands.add_parser("ui", help="start the MLflow UI on 127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    add_flags(ui, TrackingConfig, "tracking", only=("tracking_uri",))

    dashboard = commands.add_parser("dashboard", help="start optuna-dashboard on the sweeps' Optuna storage, on "
                                                      "127.0.0.1")
    dashboard.add_argument("--port", type=int, default=8080, help="default: 8080")
    add_flags(dashboard, SweepConfig, "sweep", only=("storage",))

    models = commands.add_parser("models", help="prepare built-in encoders in the local cache")
    models.add_argument("action", choices=["build-tiny", "import-e5-small", "where"])
    return root


def _run_config(args):
    """The run's configuration from the flags, validated by the schema (sweeps/config/schema.py)."""
    from sweeps.config.flags import from_flags
    from sweeps.config.schema import DataConfig, ResumeConfig, RunConfig, TrackingConfig, TrainConfig

    return RunConfig(task=getattr(args, "task", "") or "", encoder=getattr(args, "encoder", "tiny-xlmr"),
                     data=from_flags(args, DataConfig), train=from_flags(args, TrainConfig),
                     **from_flags(args, TrackingConfig).model_dump(exclude={"artifact_root"}),  # the environment's
                     **from_flags(args, ResumeConfig).model_dump())


def _tracking_uri(args) -> str:
    """The MLflow store of a command, checked to answer."""
    from sweeps.runs.preflight import check_tracking
    from sweeps.tracking.store import tracking_uri

    uri = tracking_uri(getattr(args, "tracking_uri", None))
    check_tracking(uri)
    return uri


def cmd_tasks(args) -> None:
    from datamodules.tasks import load_registry

    registry = load_registry(getattr(args, "tasks_files", ()))
    rows = [("task", "kind", "format", "metric", "data source", "XTREME", "XTREME-R", "all", "languages")]
    for spec in registry.values():
        source = ", ".join(sorted({s.dataset for s in spec.sources})) or \
            f"mixture of {', '.join(spec.mixture.tasks)} ({spec.mixture.sampling})"
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
    if result is None:  # a rank other than 0 of a fit that srun or torchrun started on every rank
        return
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
    from sweeps.config.flags import from_flags
    from sweeps.config.schema import SweepConfig, gpu_ids
    from sweeps.engine.devices import worker_devices
    from pathlib import Path

    from sweeps.engine.sweep import PREFLIGHTED_ENV, checked_sizes, launch_workers, run_sweep

    settings = from_flags(args, SweepConfig, {"storage": getattr(args, "storage", None) or
                                              os.environ.get(STORAGE_ENV)})
    if settings.gpus and not hasattr(args, "workers"):  # one worker per GPU
        settings = settings.evolve(workers=len(gpu_ids(settings.gpus)))
    shares = worker_devices(settings.gpus, settings.workers) if settings.gpus else None
    if os.environ.get(PREFLIGHTED_ENV) == str(Path(args.experiment_file)):  # a worker its launcher checked for
        from sweeps.engine.experiment import load_experiment

        checked, sizes = load_experiment(args.experiment_file), {}
    else:
        checked, sizes = checked_sizes(args.experiment_file, settings)
    if settings.plan:
        from sweeps.engine.plan import plan

        print(plan(checked, sizes, settings))
        return
    if settings.check:
        print(f"preflight passed: {checked.summary()}")
        return
    print(f"sweep {checked.banner()}", file=sys.stderr, flush=True)
    if settings.workers > 1:
        code = launch_workers(checked, settings)
        if code:
            raise RuntimeError(f"a sweep worker exited with status {code}")
        return
    if shares:
        os.environ["CUDA_VISIBLE_DEVICES"] = shares[0]
    parent = run_sweep(checked, settings)
    print(f"sweep finished: MLflow parent run {parent}")


def cmd_promote(args) -> None:
    from sweeps.config.flags import from_flags
    from sweeps.config.schema import PromoteConfig
    from sweeps.tracking.registry import champions, promote

    settings = from_flags(args, PromoteConfig)
    if not args.list and not args.task:
        raise ConfigError("promote needs a target task, or --list")
    uri = _tracking_uri(args)
    if args.list:
        for row in champions(uri, settings.experiments):
            print("  ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
            if args.predictions:
                _write_submission(uri, row["task"], row["run_id"], args.predictions)
        return
    result = promote(args.task, uri, settings)
    verb = "promoted" if result.moved else "kept"
    print(f"{verb} models:/{result.model}@champion = version {result.version} (run {result.run_id}, "
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
    from sweeps.config.flags import from_flags
    from sweeps.config.schema import DataConfig
    from sweeps.reporting.benchmark import format_result
    from sweeps.reporting.score import benchmarks, format_scores, score

    data = from_flags(args, DataConfig)
    results = score(args.predictions, args.gold, data.tasks_files, _tracking_uri(args), data.seqeval)
    print(format_scores(results))
    aggregated = benchmarks(results, load_registry(data.tasks_files), args.predictions)
    for result in aggregated:
        if result.tasks:
            print("\n" + format_result(result))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"scores": [vars(r) for r in results], "benchmarks": [r.to_json() for r in aggregated]},
                      handle, indent=2)


def cmd_report(args) -> None:
    from pathlib import Path

    from sweeps.config.flags import from_flags
    from sweeps.config.schema import ReportConfig
    from sweeps.engine.experiment import load_experiment
    from sweeps.reporting.report import build
    from sweeps.tracking.store import default_store

    settings = from_flags(args, ReportConfig)
    names = [load_experiment(n).name if n.endswith((".yaml", ".yml")) else safe_name(n, "experiment")
             for n in args.experiment]
    out = Path(args.out) if args.out else default_store() / "reports" / "+".join(names)
    if settings.by:
        from sweeps.reporting import factors

        paths = factors.build(names, _tracking_uri(args), out, list(settings.by))
    else:
        paths = build(names, _tracking_uri(args), out)
    print(paths["markdown"].read_text())
    print("written: " + ", ".join(str(p) for p in paths.values()))


def cmd_compare(args) -> None:
    from datamodules.tasks import load_registry
    from lightning_modules.formats import get_spec
    from sweeps.reporting.compare import compare, format_comparison, log, run_id_of

    uri, experiment = _tracking_uri(args), safe_name(args.experiment, "--experiment")
    tasks_files = getattr(args, "tasks_files", ())
    run_a, run_b = run_id_of(args.run_a), run_id_of(args.run_b)
    results = compare(run_a, run_b, uri, tasks_files)
    registry = load_registry(tasks_files)
    metrics = {c.task: get_spec(registry[c.task].format).scored_by(registry[c.task].metric) for c in results}
    print(format_comparison(results, metrics, args.show))
    print(f"\nall disagreements: MLflow run {log(results, run_a, run_b, uri, experiment)} (compare/…)")


def cmd_gc(args) -> None:
    import mlflow

    from sweeps.tracking.retention import delete, doomed, experiments, human

    uri = _tracking_uri(args)
    client = mlflow.MlflowClient(uri)
    found = [d for experiment in experiments(client, args.experiment) for d in doomed(client, experiment,
                                                                                     keep=args.keep)]
    for item in found:
        print(f"{item.experiment}  {item.phase}  run {item.run_id}  store {human(item.store_bytes)}  cache "
              f"{human(item.cache_bytes)}  ({item.reason})")
    total = human(sum(d.store_bytes + d.cache_bytes for d in found))
    if not found:
        print("nothing to delete: every checkpoint left is kept")
    elif args.yes:
        delete(client, uri, found)
        print(f"deleted {len(found)} checkpoint(s), {total}")
    else:
        print(f"{len(found)} checkpoint(s), {total}: run again with --yes to delete them")


def cmd_du(args) -> None:
    import mlflow

    from sweeps.tracking.retention import experiments, human, usage

    client = mlflow.MlflowClient(_tracking_uri(args))
    chosen = experiments(client, args.experiment)
    print(f"{'experiment':<24}{'phase':<40}{'runs':>6}{'store':>12}{'cache':>12}")
    for experiment in chosen:
        rows = usage(client, experiment)
        for row in rows:
            print(f"{row.experiment:<24}{row.phase:<40}{row.runs:>6}{human(row.store_bytes):>12}"
                  f"{human(row.cache_bytes):>12}")
        print(f"{experiment.name:<24}{'total':<40}{sum(r.runs for r in rows):>6}"
              f"{human(sum(r.store_bytes for r in rows)):>12}{human(sum(r.cache_bytes for r in rows)):>12}")


def cmd_sync(args) -> None:
    from sweeps.tracking.spool import spool_root, sync
    from sweeps.tracking.store import tracking_uri

    root = spool_root(getattr(args, "spool_dir", None))
    synced = sync(root, tracking_uri(args.tracking_uri) if args.tracking_uri else None)
    for run in synced:
        print(f"sent run {run.run_id}: {run.operations} operations, {run.status or 'still running: kept'}")
    print(f"{len(synced)} spooled run(s) sent from {root}" if synced else f"nothing spooled in {root}")


def cmd_ui(args) -> None:
    from sweeps.tracking.ui import start_server

    address = f"http://127.0.0.1:{args.port}"
    serve(start_server(_tracking_uri(args), args.port), f"{address}/health", f"MLflow UI at {address}")


def cmd_dashboard(args) -> None:
    from sweeps.engine.dashboard import start_dashboard
    from sweeps.runs.preflight import check_storage
    from sweeps.tracking.store import storage_url

    storage = storage_url(getattr(args, "storage", None) or os.environ.get(STORAGE_ENV))
    check_storage(storage)
    address = f"http://127.0.0.1:{args.port}"
    serve(start_dashboard(storage, args.port), f"{address}/api/meta",
          f"optuna-dashboard at {address} (storage {redact(storage)})")


def serve(server, health_url: str, banner: str) -> None:
    """Wait until a server child answers, say where it is, and keep it until it ends or this command is stopped."""
    from sweeps.children import stop_group, wait_until_up

    try:
        wait_until_up(health_url, server)
        print(f"{banner} (Ctrl-C stops it)", flush=True)
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:  # done, Ctrl-C or SIGTERM: the server and its workers go too
        stop_group(server)


COMMANDS = {"tasks": cmd_tasks, "fit": cmd_fit, "evaluate": cmd_evaluate, "sweep": cmd_sweep,
            "promote": cmd_promote, "report": cmd_report, "sync": cmd_sync, "ui": cmd_ui, "models": cmd_models,
            "score": cmd_score, "compare": cmd_compare, "dashboard": cmd_dashboard, "gc": cmd_gc, "du": cmd_du}


TRACKING_UNAVAILABLE = 3  # exit status: the tracking store was out of reach (what could not be sent is spooled)


def quiet() -> None:
    """No per-file progress bars from datasets and the hub; no tokenizer thread pools fighting the DataLoader."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # an error is one line: no INFO lines from MLflow creating a store, no error log from datasets' JSON reader
    # beside the line that names the file and its row
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("DATASETS_VERBOSITY", "critical")


def main(argv=None) -> int:
    """Exit 0; 2 for input an error names (nothing was created); 1 when a run that had started failed (it is
    marked FAILED). Either way one line on stderr; XSTILTS_DEBUG=1 shows the traceback."""
    from sweeps.config.flags import numbers_as_values

    try:
        args = parser().parse_args(numbers_as_values(list(sys.argv[1:] if argv is None else argv)))
    except SystemExit as stop:  # a usage error (one line, exit 2) or --help (exit 0)
        return stop.code
    quiet()
    from sweeps.runs import preemption
    from sweeps.tracking import faults

    preemption.handle_sigterm()
    try:
        settings_to_environment(args)
        COMMANDS[args.command](args)
    except SystemExit as error:
        if not preemption.preempted(error):
            raise
        if args.command in ("fit", "sweep"):
            print(f"xstilts {args.command}: stopped by SIGTERM; the run is marked KILLED with its resumable "
                  f"checkpoint: the same command continues from it", file=sys.stderr)
        return preemption.PREEMPTED
    except Exception as error:
        if os.environ.get("XSTILTS_DEBUG") == "1":
            traceback.print_exc()
        if faults.unreachable(error):
            known = faults.unavailable_in(error)
            uri = getattr(args, "tracking_uri", None) or os.environ.get("MLFLOW_TRACKING_URI", "")
            message = str(known) if known is not None else (
                f"tracking store {uri} did not answer within {faults.timeout_seconds():.0f} s "
                f"({faults.first_line(error)})")
            print(f"xstilts {args.command}: error: {redact(message)}", file=sys.stderr)
            return TRACKING_UNAVAILABLE
        print(f"xstilts {args.command}: error: {one_line(error)}", file=sys.stderr)
        from sweeps.tracking.store import RunFailed

        return 1 if isinstance(error, RunFailed) or not isinstance(error, INPUT_ERRORS) else 2
    return 0


RESUME_ENVIRONMENT = {"checkpoint_every_steps": "XSTILTS_CHECKPOINT_EVERY_STEPS",
                      "checkpoint_every_minutes": "XSTILTS_CHECKPOINT_EVERY_MINUTES",
                      "checkpoint_dir": "XSTILTS_CHECKPOINT_DIR"}


def settings_to_environment(args) -> None:
    """Fault, system-metrics and resume settings reach every run of the command, sweep workers and phases included, through the
    environment."""
    from sweeps.config.flags import from_flags
    from sweeps.config.schema import ResumeConfig, TrackingConfig
    from sweeps.tracking import faults
    from sweeps.tracking.store import SYSTEM_METRICS_ENV

    from sweeps.tracking.store import ARTIFACT_ROOT_ENV

    tracking = from_flags(args, TrackingConfig, only=("tracking_timeout", "spool_dir", "artifact_root",
                                                      "system_metrics_interval"))
    faults.configure(tracking.tracking_timeout)
    if tracking.spool_dir:
        os.environ["XSTILTS_SPOOL"] = tracking.spool_dir
    if tracking.artifact_root:
        os.environ[ARTIFACT_ROOT_ENV] = tracking.artifact_root
    if tracking.system_metrics_interval is not None:
        os.environ[SYSTEM_METRICS_ENV] = str(tracking.system_metrics_interval)
    resume = from_flags(args, ResumeConfig)
    for name, variable in RESUME_ENVIRONMENT.items():
        if getattr(resume, name) is not None:
            os.environ[variable] = str(getattr(resume, name))


# what a user's input causes before anything starts: bad settings, tasks, data, encoders, files
INPUT_ERRORS = (ValueError, LookupError, OSError)


def one_line(error: BaseException) -> str:
    """The error's message on one line, credentials redacted."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return redact(" ".join(lines[:1] + lines[1:3]) if lines else type(error).__name__)


def entry() -> None:
    """The `xstilts` command: main(), then out of the process at once."""
    leave(main())


def leave(status) -> None:
    """Exit with `status` without the interpreter's teardown. When main() returns, every run has ended and its
    tracking is written (a run's end drains MLflow's queue), child processes have stopped and temporary folders are
    gone; the teardown (threads joined, modules collected) took 2-3 s after a fit and saved nothing."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status or 0)


if __name__ == "__main__":
    entry()
