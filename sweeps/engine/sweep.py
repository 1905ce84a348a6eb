"""`xstilts sweep EXPERIMENT.yaml`: an Optuna study per phase and task, trials tracked in MLflow.

Order: the optional MLM phase, then each intermediate sequence (and the no-intermediate baseline), then every target
from the best checkpoint of each. Studies live in an RDB storage (sqlite under mlruns/ by default, PostgreSQL to share
them across machines), with heartbeats: a killed worker's trial is marked failed and retried, and a re-run resumes
each study where it stopped. Phases are cached by configuration (sweeps/engine/pipeline.py), so nothing is trained twice.

MLflow tree: one parent run per sweep -> one run per trial -> the phase run it trained (or reused).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import lightning as L
import mlflow
import optuna

from datamodules.tasks import load_registry
from lightning_modules.formats import get_spec
from sweeps.engine.experiment import Experiment, load_experiment
from sweeps.engine.pipeline import Start, evaluate_phase, run_phase, start_after
from sweeps.config import SweepConfig, TrainConfig
from sweeps.config.secrets import STORAGE_ENV, TRACKING_ENV
from sweeps.runs.preemption import preempted
from sweeps.tracking.store import database_url, default_store, git_commit, tracking_uri

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 5
WORKER_GRACE_SECONDS = 120  # a SIGTERMed worker's time to save its checkpoint and end its runs
GRACE_SECONDS = 15
FINISHED_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
# what fills a study's trial budget: finished trials, and those a worker runs now or will run (a killed worker's
# trial, queued again as WAITING); a re-run of a finished study or a second worker adds no trial beyond the budget
BUDGET_STATES = FINISHED_STATES + (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)


class TrialBudget:
    """Stops `study.optimize` once the budget is taken (optuna's MaxTrialsCallback counts only finished trials,
    so each call, and each parallel worker, would still start one more)."""

    def __init__(self, trials: int):
        self.trials = trials

    def left(self, study: optuna.Study) -> int:
        return self.trials - len(study.get_trials(deepcopy=False, states=BUDGET_STATES))

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.left(study) <= 0:
            study.stop()


def storage_url(explicit: str | None) -> str:
    if explicit:
        return database_url(explicit)
    default_store().mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{default_store() / 'optuna.db'}"


def rdb_storage(url: str) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(
        url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2),
        engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None)


def suggest(trial: optuna.Trial, space: dict, base: TrainConfig) -> TrainConfig:
    """TrainConfig with each searched option drawn by the trial: a list is a choice, {low, high[, log]} a range."""
    values = {}
    for name, spec in space.items():
        if isinstance(spec, list):
            values[name] = trial.suggest_categorical(name, spec)
        elif isinstance(spec, dict):
            low, high, log_scale = spec["low"], spec["high"], bool(spec.get("log", False))
            if isinstance(low, int) and isinstance(high, int):
                values[name] = trial.suggest_int(name, low, high, log=log_scale)
            else:
                values[name] = trial.suggest_float(name, float(low), float(high), log=log_scale)
        else:
            values[name] = spec
    return base.evolve(**values)


class PruneOnValidation(L.Callback):
    """Reports the English validation metric to Optuna at every validation (step = training step) and stops
    the trial when the pruner says so."""

    def __init__(self, trial: optuna.Trial, monitor: str):
        self.trial, self.monitor = trial, monitor

    def on_validation_end(self, trainer, module):
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None:
            return
        self.trial.report(float(value), step=trainer.global_step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"{self.monitor}={float(value):.4f} at step {trainer.global_step}")


@dataclass
class Sweep:
    experiment: Experiment
    uri: str
    storage: optuna.storages.RDBStorage
    parent_run_id: str
    deadline: float | None
    worker: int = 0  # workers sample with different seeds, so parallel trials differ
    encoder: str = ""  # this pass's encoder and seed (an experiment may list several of each)
    seed: int = 0

    def study_prefix(self) -> str:
        single = len(self.experiment.encoders) == 1 and len(self.experiment.seeds) == 1
        return self.experiment.name if single else f"{self.experiment.name}/{self.encoder}/seed{self.seed}"

    def remaining(self) -> float | None:
        return None if self.deadline is None else max(self.deadline - time.time(), 1.0)


def find_or_create_parent(client, experiment: Experiment, mlflow_experiment_id: str) -> str:
    """The sweep's parent run: the oldest run tagged with this sweep's name, created if there is none."""
    query = f"tags.`xstilts.sweep` = '{experiment.name}' and tags.`xstilts.kind` = 'sweep'"
    found = client.search_runs([mlflow_experiment_id], query, order_by=["attributes.start_time ASC"], max_results=1)
    if found:
        client.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id
    run = client.create_run(mlflow_experiment_id, run_name=f"sweep-{experiment.name}",
                            tags={"xstilts.sweep": experiment.name, "xstilts.kind": "sweep",
                                  "mlflow.source.git.commit": git_commit(), "xstilts.experiment_file":
                                  experiment.path})
    client.log_artifact(run.info.run_id, experiment.path)
    oldest = client.search_runs([mlflow_experiment_id], query, order_by=["attributes.start_time ASC"],
                                max_results=1)[0]
    if oldest.info.run_id != run.info.run_id:  # another worker created one at the same time: use theirs
        client.delete_run(run.info.run_id)
    return oldest.info.run_id


def evaluate_only(sweep: Sweep, task: str, start: Start) -> None:
    """Retrieval targets have nothing to train or search: one evaluation per starting encoder."""
    tags = {"xstilts.sweep": sweep.experiment.name, "xstilts.task": task, "xstilts.intermediate": start.label,
            "xstilts.encoder": sweep.encoder, "xstilts.seed": sweep.seed}
    data = final_evaluation_data(sweep.experiment.data_for(task), "target", task)
    evaluate_phase(task, start, data, sweep.uri, sweep.experiment.name,
                   sweep.parent_run_id, tags)


def final_evaluation_data(data, kind: str, task: str):
    """Perturbed copies and adversarial sets are for the targets' final evaluation: none in other phases (their
    phase keys stay those of an experiment without them), and a target gets the adversarial sets that fit it."""
    from datamodules.perturb import misfit

    if kind != "target":
        return data.evolve(perturbations=(), perturb_seed=0, perturb_dictionary=None, adversarial=())
    registry = load_registry(data.tasks_files)
    fitting = tuple(name for name in data.adversarial if misfit(registry[name], registry[task]) is None)
    return data.evolve(adversarial=fitting)


def run_study(sweep: Sweep, kind: str, task: str, start: Start) -> Start | None:
    """Optimize one phase's study to its trial budget; returns where the next phase starts (its best trial)."""
    registry = load_registry(sweep.experiment.data.tasks_files)
    spec = registry[task]
    if not get_spec(spec.format).trains:
        evaluate_only(sweep, task, start)
        return None
    train_spec = registry[spec.train_task] if spec.train_task else spec
    direction = "minimize" if get_spec(train_spec.format).lower_is_better(train_spec.metric) else "maximize"
    label = task if start.label == "none" else f"{start.label}>{task}"
    name = f"{sweep.study_prefix()}/{kind}/{label if kind != 'target' else f'{task}/from-{start.label}'}"
    study = optuna.create_study(study_name=name, storage=sweep.storage, direction=direction, load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=sweep.seed + 1000 * sweep.worker),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1))
    base = TrainConfig(seed=sweep.seed)
    space = sweep.experiment.space(kind, task)
    data = final_evaluation_data(sweep.experiment.data_for(task), kind, task)
    monitor = f"val/{train_spec.train_language}/{train_spec.metric}"

    running: dict[str, int] = {}

    def objective(trial: optuna.Trial) -> float:
        running["trial"] = trial.number
        train = suggest(trial, space, base)
        trial_tags = {"xstilts.sweep": sweep.experiment.name, "xstilts.kind": "trial", "xstilts.study": name,
                      "xstilts.trial": trial.number, "xstilts.phase": kind, "xstilts.task": task,
                      "xstilts.intermediate": start.label if kind == "target" else label,
                      "xstilts.encoder": sweep.encoder, "xstilts.seed": train.seed}
        client = mlflow.MlflowClient(sweep.uri)
        from sweeps.tracking.store import tracked_run

        with tracked_run(sweep.uri, sweep.experiment.name, f"trial-{name}-{trial.number}", trial_tags,
                         sweep.parent_run_id) as trial_run:
            trial.set_user_attr("mlflow_trial_run_id", trial_run.run_id)
            trial_run.log_params({k: v for k, v in trial.params.items()})
            result, reused = run_phase(kind, task, start, train, data, sweep.uri,
                                       sweep.experiment.name, trial_run.run_id, trial_tags,
                                       [PruneOnValidation(trial, monitor)])
            trial.set_user_attr("phase_run_id", result.run_id)
            trial_run.set_tags({"xstilts.phase_run_id": result.run_id, "xstilts.reused_phase": reused})
            client.log_metric(trial_run.run_id, "objective", result.selection_score)
            return result.selection_score

    mark_abandoned_runs(study, sweep)
    budget = TrialBudget(sweep.experiment.trials)
    with retried_if_preempted(study, running):
        if budget.left(study) > 0:
            study.optimize(objective, timeout=sweep.remaining(), catch=(), callbacks=[budget])
        wait_for_other_workers(study)
        retries = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
        if retries:  # trials of a killed or preempted worker, queued again
            study.optimize(objective, n_trials=len(retries), timeout=sweep.remaining())
            wait_for_other_workers(study)
    mark_abandoned_runs(study, sweep)
    record_budget_cut(study, sweep)
    log_study_plots(study, sweep)
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        log.warning("study %s has no completed trial", name)
        return None
    best = study.best_trial
    from sweeps.runs.run import RunResult
    from sweeps.tracking.retention import study_ended

    best_train = suggest(optuna.trial.FixedTrial(best.params), space, base)
    result = RunResult(checkpointed_best(sweep, kind, task, start, best_train, data, best), {})
    study_ended(sweep.uri, sweep.experiment.name, name, result.run_id)  # retention: train.keep
    return start_after(result, kind, task, start, best_train, data, sweep.uri)


def checkpointed_best(sweep: Sweep, kind: str, task: str, start: Start, train: TrainConfig, data, best) -> str:
    """The best trial's phase run; if retention deleted its checkpoint (it had been reused for its scores), the
    phase is trained again, because the next phase starts from it."""
    from sweeps.tracking.retention import checkpoint_deleted

    run_id = best.user_attrs["phase_run_id"]
    if not checkpoint_deleted(mlflow.MlflowClient(sweep.uri), run_id):
        return run_id
    tags = {"xstilts.sweep": sweep.experiment.name, "xstilts.phase": kind, "xstilts.task": task,
            "xstilts.trial": best.number, "xstilts.encoder": sweep.encoder, "xstilts.seed": train.seed,
            "xstilts.retrained_for_checkpoint": run_id}
    result, _ = run_phase(kind, task, start, train, data, sweep.uri, sweep.experiment.name, sweep.parent_run_id,
                          tags, with_checkpoint=True)
    return result.run_id


def record_budget_cut(study: optuna.Study, sweep: Sweep) -> None:
    """A study the time budget left with fewer trials than asked: said on stderr and named in the sweep run's tag
    `xstilts.budget_cut` (every such study, across workers and passes)."""
    done = len(study.get_trials(deepcopy=False, states=FINISHED_STATES))
    if sweep.deadline is None or time.time() < sweep.deadline or done >= sweep.experiment.trials:
        return
    print(f"time budget: {sweep.experiment.timeout_minutes:g} minutes reached; study {study.study_name} ran "
          f"{done} of {sweep.experiment.trials} trials", file=sys.stderr, flush=True)
    client = mlflow.MlflowClient(sweep.uri)
    cut = client.get_run(sweep.parent_run_id).data.tags.get("xstilts.budget_cut", "")
    names = [n for n in cut.split(", ") if n]
    if study.study_name not in names:
        client.set_tag(sweep.parent_run_id, "xstilts.budget_cut", ", ".join([*names, study.study_name]))


@contextmanager
def retried_if_preempted(study: optuna.Study, running: dict[str, int]):
    """A trial stopped by SIGTERM (its fit saved a resumable checkpoint) is failed and queued again at once, as the
    storage's heartbeat does for a killed worker's after its grace period; the retry continues from the checkpoint."""
    try:
        yield
    except SystemExit as error:
        number = running.get("trial")
        if preempted(error) and number is not None:
            trial = study.get_trials(deepcopy=False)[number]
            if trial.state == optuna.trial.TrialState.RUNNING:
                study.tell(number, state=optuna.trial.TrialState.FAIL)
                retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)
                retry(study, study.get_trials(deepcopy=False)[number])
                log.warning("trial %d of %s stopped by SIGTERM: queued again", number, study.study_name)
        raise


def wait_for_other_workers(study: optuna.Study) -> None:
    """Wait until no trial of the study is running (a killed worker's trial turns failed after its grace period)."""
    while any(t.state == optuna.trial.TrialState.RUNNING for t in study.get_trials(deepcopy=False)):
        optuna.storages.fail_stale_trials(study)
        time.sleep(HEARTBEAT_SECONDS)


def mark_abandoned_runs(study: optuna.Study, sweep: Sweep) -> None:
    """MLflow runs of trials a killed worker left behind still say RUNNING: mark them (and their phase runs) failed.
    Found by the study and trial number they are tagged with: a worker killed right after creating its trial run has
    not stored the run's id in the trial yet."""
    failed = {str(t.number) for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))}
    client = mlflow.MlflowClient(sweep.uri)
    found = client.get_experiment_by_name(sweep.experiment.name)
    if not failed or found is None:
        return
    query = f"tags.`xstilts.study` = '{study.study_name}' and attributes.status = 'RUNNING'"
    for abandoned in client.search_runs([found.experiment_id], query, max_results=50000):
        if abandoned.data.tags.get("xstilts.trial") in failed:
            client.set_terminated(abandoned.info.run_id, "FAILED")
            client.set_tag(abandoned.info.run_id, "xstilts.abandoned", "worker died")


def log_study_plots(study: optuna.Study, sweep: Sweep) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    client = mlflow.MlflowClient(sweep.uri)
    folder = f"studies/{study.study_name.replace('/', '__')}"
    for name, draw in (("optimization_history", plots.plot_optimization_history),
                       ("param_importances", plots.plot_param_importances)):
        try:
            axes = draw(study)
        except (ValueError, RuntimeError) as error:  # importances need two finished trials and a varied parameter
            log.info("no %s plot for %s: %s", name, study.study_name, error)
            continue
        client.log_figure(sweep.parent_run_id, axes.figure, f"{folder}/{name}.png")
        plt.close(axes.figure)


def preflight(path: str | Experiment, settings: SweepConfig) -> Experiment:
    """Every input of the sweep checked before anything is created: the experiment file, the stores (they answer
    within seconds), the cache, the encoders, and the data of every phase task (local files first, then every row)."""
    from lightning_modules.encoders import resolve
    from sweeps.config import RunConfig
    from sweeps.runs.preflight import check_cache, check_files, check_run, check_storage, check_tracking

    experiment = path if isinstance(path, Experiment) else load_experiment(path)
    check_tracking(tracking_uri(settings.tracking_uri))
    check_storage(storage_url(settings.storage))
    check_cache()
    configs = [RunConfig(task=task, encoder=experiment.encoders[0],
                         data=final_evaluation_data(experiment.data_for(task), kind, task))
               for kind, task in experiment.phase_tasks()]
    for config in configs:  # a missing file of any phase fails in seconds, before rows are read
        check_files(config)
    for encoder in experiment.encoders:
        resolve(encoder)
    for config in configs:
        check_run(config, training=get_spec(load_registry(config.data.tasks_files)[config.task].format).trains)
    return experiment


def run_sweep(experiment: Experiment, settings: SweepConfig) -> str:
    """One worker's pass over the whole (preflighted) experiment; returns the sweep's parent run id."""
    from sweeps.runs.console import once_per_process
    from sweeps.tracking.store import experiment_id

    once_per_process()
    uri = tracking_uri(settings.tracking_uri)
    client = mlflow.MlflowClient(uri)
    parent = find_or_create_parent(client, experiment, experiment_id(client, uri, experiment.name))
    deadline = time.time() + 60 * experiment.timeout_minutes if experiment.timeout_minutes else None
    storage_backend = rdb_storage(storage_url(settings.storage))
    try:
        for encoder in experiment.encoders:
            for seed in experiment.seeds:
                run_pipeline(Sweep(experiment, uri, storage_backend, parent, deadline, settings.worker_index,
                                   encoder, seed))
    except BaseException:
        stopped = isinstance(sys.exc_info()[1], KeyboardInterrupt | SystemExit)  # Ctrl-C, SIGTERM
        client.set_terminated(parent, "KILLED" if stopped else "FAILED")
        raise
    client.set_terminated(parent, "FINISHED")
    return parent


def run_pipeline(sweep: Sweep) -> None:
    """MLM, intermediate sequences and the baseline, then every target from each of their best checkpoints."""
    base = Start(encoder=sweep.encoder, key=sweep.encoder)
    if sweep.experiment.mlm:
        base = run_study(sweep, "mlm", sweep.experiment.mlm, base) or base
    starts = [s for s in (_intermediate_start(sweep, seq, base) for seq in sweep.experiment.intermediates) if s]
    for target in sweep.experiment.targets:
        for start in starts:
            run_study(sweep, "target", target, start)


def _intermediate_start(sweep: Sweep, sequence: tuple[str, ...], base: Start) -> Start | None:
    start = base
    for task in sequence:
        start = run_study(sweep, "intermediate", task, start)
        if start is None:
            return None
    return start


def launch_workers(experiment: Experiment, settings: SweepConfig) -> int:
    """Run `settings.workers` sweep processes on the same studies; returns the worst exit code. The stores' URIs
    reach the workers through their environment, never their command line (it may hold a password)."""
    storage, uri = storage_url(settings.storage), tracking_uri(settings.tracking_uri)
    # the stores' tables are created here, once: workers starting together would race to create them (MLflow's
    # migrations take seconds on PostgreSQL)
    rdb_storage(storage)
    mlflow.MlflowClient(uri).search_experiments(max_results=1)
    from sweeps.children import start_group, stop_group

    command = [sys.executable, "-m", "sweeps.cli", "sweep", str(Path(experiment.path)), "--workers", "1"]
    environment = {**os.environ, STORAGE_ENV: storage, TRACKING_ENV: uri}
    processes = []
    try:
        for index in range(settings.workers):
            processes.append(start_group(command + ["--worker-index", str(index)], env=environment))
            time.sleep(3 if index == 0 else 0)  # let the first worker create the parent run
        return max(p.wait() for p in processes)
    finally:  # stopped (Ctrl-C, SIGTERM) or done: each worker saves its checkpoint and ends, its children with it
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            stop_group(process, grace=WORKER_GRACE_SECONDS)
