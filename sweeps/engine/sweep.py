"""`xstilts sweep EXPERIMENT.yaml`: an Optuna study per phase and task, trials tracked in MLflow.

The experiment is a graph of studies (`study_graph`): the optional MLM phase, then each intermediate sequence (and the
no-intermediate baseline), then every target from the best checkpoint of each. Every worker, on any host, runs the
same loop (`work`): take any open trial slot of any study whose predecessor is done, run it, look again. A study has
exactly its budget of slots; a slot, like a phase configuration (sweeps/engine/pipeline.py), is claimed atomically in
the sweep's database (sweeps/engine/claims.py), so with any number of workers each slot and each phase runs once. A
slot's parameters belong to the slot (a finite space's shuffled points, else a sampler seeded by the slot, kept for
retries): a sweep killed and run again asks what an uninterrupted one would. Studies live in an RDB storage (sqlite
under mlruns/ by default, PostgreSQL to share them across hosts) with heartbeats: a dead worker's slots are taken
over after the grace period, its trials marked FAIL and their runs FAILED.

MLflow tree: one parent run per sweep -> one run per trial -> the phase run it trained (or reused).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import random
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import mlflow
import optuna

from datamodules.tasks import load_registry
from lightning_modules.formats import get_spec
from sweeps.config import DataConfig, SweepConfig, TrainConfig
from sweeps.config.secrets import STORAGE_ENV, TRACKING_ENV
from sweeps.engine.claims import DONE, FREE, Claims, created_once
from sweeps.engine.devices import worker_environments
from sweeps.engine.experiment import Experiment, load_experiment
from sweeps.engine.pipeline import Start, evaluate_phase, run_phase, start_after
from sweeps.runs.preemption import preempted
from sweeps.tracking.retention import checkpoint_deleted, study_ended
from sweeps.runs.run import RunResult
from sweeps.tracking.store import git_commit, storage_url, tracked_run, tracking_uri

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 5
POLL_SECONDS = 1  # how often a worker with nothing to take looks again
PREFLIGHTED_ENV = "XSTILTS_PREFLIGHTED"  # the experiment file a launcher checked for its workers
WORKER_GRACE_SECONDS = 120  # a SIGTERMed worker's time to save its checkpoint and end its runs
GRACE_SECONDS = 15
FINISHED_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)




def rdb_storage(url: str) -> optuna.storages.RDBStorage:
    return created_once(lambda: optuna.storages.RDBStorage(
        url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS,
        engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None))


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


@dataclass(eq=False)
class Study:
    """One node of the experiment's graph of studies: a phase kind and task, for one encoder and seed, starting from
    the best trial of `after` (None: from the encoder)."""

    name: str
    kind: str
    task: str
    encoder: str
    seed: int
    label: str  # the phases this study's runs have behind them and its own, e.g. "squad_v1>mnli"
    after: Study | None
    budget: int = 1
    trains: bool = True
    space: dict = field(default_factory=dict)
    data: DataConfig | None = None

    def slot(self, index: int) -> str:
        return f"slot:{self.name}#{index}"


def study_graph(experiment: Experiment) -> list[Study]:
    """Every study of the experiment, each after the studies it depends on (MLM -> intermediate sequences and the
    baseline -> the targets of each). Sequences sharing a prefix share its studies."""
    registry = load_registry(experiment.data.tasks_files)
    single = len(experiment.encoders) == 1 and len(experiment.seeds) == 1
    studies: dict[str, Study] = {}

    def add(kind: str, task: str, after: Study | None, encoder: str, seed: int) -> Study:
        label = task if after is None or after.label == "none" else f"{after.label}>{task}"
        prefix = experiment.name if single else f"{experiment.name}/{encoder}/seed{seed}"
        start = after.label if after else "none"
        name = f"{prefix}/{kind}/{task}/from-{start}" if kind == "target" else f"{prefix}/{kind}/{label}"
        if name not in studies:
            trains = get_spec(registry[task].format).trains
            space = experiment.space(kind, task)
            budget = min(experiment.trials, grid_size(space) or experiment.trials) if trains else 1
            studies[name] = Study(name, kind, task, encoder, seed, label, after, budget, trains, space,
                                  final_evaluation_data(experiment.data_for(task), kind, task))
        return studies[name]

    for encoder in experiment.encoders:
        for seed in experiment.seeds:
            base = add("mlm", experiment.mlm, None, encoder, seed) if experiment.mlm else None
            starts = []
            for sequence in experiment.intermediates:
                after = base
                for task in sequence:
                    after = add("intermediate", task, after, encoder, seed)
                starts.append(after)
            for target in experiment.targets:
                for after in starts:
                    add("target", target, after, encoder, seed)
    return list(studies.values())


def grid_size(space: dict) -> int | None:
    """How many parameter sets a space without a continuous range has (None for one with a float range)."""
    size = 1
    for spec in space.values():
        if isinstance(spec, list):
            size *= len(spec)
        elif isinstance(spec, dict):
            if not (isinstance(spec["low"], int) and isinstance(spec["high"], int)):
                return None
            size *= spec["high"] - spec["low"] + 1
    return size


def grid_point(space: dict, study: str, seed: int, index: int) -> dict:
    """The index-th parameter set of a finite space, in an order shuffled by the seed and the study: every slot of a
    study gets a different set, whatever the number of workers and restarts."""
    axes = {}
    for name, spec in sorted(space.items()):
        if isinstance(spec, list):
            axes[name] = spec
        elif isinstance(spec, dict):
            axes[name] = list(range(spec["low"], spec["high"] + 1))
    points = list(itertools.product(*axes.values()))
    random.Random(f"{seed}/{study}").shuffle(points)
    return dict(zip(axes, points[index]))


def slot_seed(seed: int, study: str, index: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{study}/{index}".encode()).digest()[:4], "little")


class FixedParams(optuna.samplers.BaseSampler):
    """The parameters a slot was given when it first ran: its retry asks exactly them again."""

    def __init__(self, params: dict):
        self.params = params

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.params[param_name]


@dataclass
class Sweep:
    """One worker's view of a running sweep."""

    experiment: Experiment
    uri: str
    storage: optuna.storages.RDBStorage
    claims: Claims
    parent_run_id: str
    deadline: float | None
    starts: dict = field(default_factory=dict)  # study name -> the Start its best trial gives (None: no result)
    cut: dict = field(default_factory=dict)  # studies the time budget left short of their trials -> trials run

    def expired(self) -> bool:
        return self.deadline is not None and time.time() >= self.deadline


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


def final_evaluation_data(data, kind: str, task: str):
    """Perturbed copies and adversarial sets are for the targets' final evaluation: none in other phases (their
    phase keys stay those of an experiment without them), and a target gets the adversarial sets that fit it."""
    from datamodules.perturb import misfit

    if kind != "target":
        return data.evolve(perturbations=(), perturb_seed=0, perturb_dictionary=None, adversarial=())
    registry = load_registry(data.tasks_files)
    fitting = tuple(name for name in data.adversarial if misfit(registry[name], registry[task]) is None)
    return data.evolve(adversarial=fitting)


def study_tags(sweep: Sweep, study: Study, start: Start) -> dict:
    return {"xstilts.sweep": sweep.experiment.name, "xstilts.study": study.name, "xstilts.phase": study.kind,
            "xstilts.task": study.task, "xstilts.encoder": study.encoder, "xstilts.seed": study.seed,
            "xstilts.intermediate": start.label if study.kind == "target" else study.label}


def open_study(sweep: Sweep, study: Study) -> optuna.Study:
    registry = load_registry(sweep.experiment.data.tasks_files)
    spec = registry[study.task]
    train_spec = registry[spec.train_task] if spec.train_task else spec
    direction = "minimize" if get_spec(train_spec.format).lower_is_better(train_spec.metric) else "maximize"
    return optuna.create_study(study_name=study.name, storage=sweep.storage, direction=direction,
                               load_if_exists=True,
                               pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1))


def monitor_of(sweep: Sweep, study: Study) -> str:
    registry = load_registry(sweep.experiment.data.tasks_files)
    spec = registry[study.task]
    train_spec = registry[spec.train_task] if spec.train_task else spec
    return f"val/{train_spec.train_language}/{train_spec.metric}"


def run_slot(sweep: Sweep, study: Study, index: int, start: Start) -> None:
    """Run trial slot `index` of a study (held by this worker): its parameters are the slot's own (a finite space's
    index-th point, else drawn by a sampler seeded by the slot, and kept for a retry), so a sweep killed and run again
    asks what an uninterrupted one would, and never a parameter set twice."""
    tags = study_tags(sweep, study, start)
    if not study.trains:  # retrieval: nothing to train or search, one evaluation per start
        evaluate_phase(study.task, start, study.data, sweep.uri, sweep.experiment.name, sweep.parent_run_id, tags,
                       sweep.claims)
        return
    optuna_study = open_study(sweep, study)
    earlier = [t for t in optuna_study.get_trials(deepcopy=False) if t.user_attrs.get("slot") == index]
    if any(t.state in FINISHED_STATES for t in earlier):  # its worker died after the trial ended
        return
    fail_stale(optuna_study, sweep)
    kept = sweep.claims.payload(study.slot(index))
    size = grid_size(study.space)
    if kept is not None:
        optuna_study.sampler = FixedParams(kept)
    elif size is not None:
        optuna_study.sampler = FixedParams(grid_point(study.space, study.name, study.seed, index))
    else:
        optuna_study.sampler = optuna.samplers.TPESampler(seed=slot_seed(study.seed, study.name, index))
    base = TrainConfig(seed=study.seed)
    running: dict[str, int] = {}

    def objective(trial: optuna.Trial) -> float:
        running["trial"] = trial.number
        train = suggest(trial, study.space, base)
        sweep.claims.set_payload(study.slot(index), dict(trial.params))
        trial.set_user_attr("slot", index)
        if earlier:
            trial.set_user_attr("retry_of", [t.number for t in earlier])
        trial_tags = {**tags, "xstilts.kind": "trial", "xstilts.trial": trial.number, "xstilts.slot": index,
                      "xstilts.seed": train.seed, "xstilts.worker": sweep.claims.owner}
        client = mlflow.MlflowClient(sweep.uri)
        with tracked_run(sweep.uri, sweep.experiment.name, f"trial-{study.name}-{trial.number}", trial_tags,
                         sweep.parent_run_id) as trial_run:
            trial.set_user_attr("mlflow_trial_run_id", trial_run.run_id)
            trial_run.log_params(dict(trial.params))
            result, reused = run_phase(study.kind, study.task, start, train, study.data, sweep.uri,
                                       sweep.experiment.name, trial_run.run_id, trial_tags,
                                       [PruneOnValidation(trial, monitor_of(sweep, study))], sweep.claims)
            trial.set_user_attr("phase_run_id", result.run_id)
            trial.set_user_attr("checkpoint", result.checkpoint_uri)
            trial_run.set_tags({"xstilts.phase_run_id": result.run_id, "xstilts.reused_phase": reused})
            client.log_metric(trial_run.run_id, "objective", result.selection_score)
            return result.selection_score

    with retried_if_preempted(optuna_study, running):
        optuna_study.optimize(objective, n_trials=1, catch=())


def fail_stale(optuna_study: optuna.Study, sweep: Sweep) -> None:
    """Trials of dead workers: FAIL in Optuna, and their MLflow runs FAILED."""
    optuna.storages.fail_stale_trials(optuna_study)
    mark_abandoned_runs(optuna_study, sweep)


def start_of(sweep: Sweep, study: Study) -> Start | None:
    """Where a ready study starts: the encoder, or the best trial of the study it follows (None: it has none). A
    study without result after an MLM phase starts from the encoder, as if there had been no MLM phase."""
    if study.after is None:
        return Start(encoder=study.encoder, key=study.encoder)
    if study.after.name not in sweep.starts:
        sweep.starts[study.after.name] = best_start(sweep, study.after)
    found = sweep.starts[study.after.name]
    if found is None and study.after.kind == "mlm":
        return Start(encoder=study.encoder, key=study.encoder)
    return found


def best_start(sweep: Sweep, study: Study) -> Start | None:
    start = start_of(sweep, study)
    if start is None or not study.trains:
        return None
    optuna_study = open_study(sweep, study)
    if not optuna_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        log.warning("study %s has no completed trial", study.name)
        return None
    best = optuna_study.best_trial
    train = suggest(optuna.trial.FixedTrial(best.params), study.space, TrainConfig(seed=study.seed))
    result = RunResult(best.user_attrs["phase_run_id"], {}, best.user_attrs["checkpoint"])
    if checkpoint_deleted(mlflow.MlflowClient(sweep.uri), result.run_id):  # reused for its scores, then pruned
        tags = {**study_tags(sweep, study, start), "xstilts.retrained_for_checkpoint": result.run_id}
        result, _ = run_phase(study.kind, study.task, start, train, study.data, sweep.uri, sweep.experiment.name,
                              sweep.parent_run_id, tags, claims=sweep.claims, with_checkpoint=True)
        study_ended(sweep.uri, sweep.experiment.name, study.name, result.run_id)  # the new run is the kept best
    return start_after(result, study.kind, study.task, start, train, study.data, sweep.uri)


def end_study(sweep: Sweep, study: Study) -> None:
    """A study whose every slot is done: its plots, and retention (train.keep) of its phases' checkpoints."""
    optuna_study = open_study(sweep, study)
    log_study_plots(optuna_study, sweep)
    if optuna_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        study_ended(sweep.uri, sweep.experiment.name, study.name, optuna_study.best_trial.user_attrs["phase_run_id"])


def is_done(sweep: Sweep, study: Study, states: dict[str, str]) -> bool:
    """Every slot the study still runs is done: all its budget, or once the time budget is spent its first slot
    (a study runs at least one trial, so the studies after it have a start)."""
    wanted = 1 if sweep.expired() and study.trains else study.budget
    return all(states.get(study.slot(i)) == DONE for i in range(wanted))


def work(sweep: Sweep, studies: list[Study]) -> None:
    """Take any open trial slot of any ready study (one whose predecessor is done), run it, look again; wait only
    when every open slot is held by another worker; end when every study is done. Once the time budget is spent, a
    study takes no slot beyond its first."""
    while True:
        states = sweep.claims.states("slot:")
        open_studies = [s for s in studies if not is_done(sweep, s, states)]
        if not open_studies:
            break
        taken = next(((study, index) for study in open_studies
                      if study.after is None or is_done(sweep, study.after, states)
                      for index in range(1 if sweep.expired() else study.budget)
                      if states.get(study.slot(index), FREE) == FREE and sweep.claims.take(study.slot(index))),
                     None)
        if taken is None:  # every open slot is another worker's, or waits for a study still running
            time.sleep(POLL_SECONDS)
            continue
        study, index = taken
        try:
            start = start_of(sweep, study)
            if start is not None:  # else the study it follows ended with no result: nothing to start from
                run_slot(sweep, study, index, start)
        except BaseException:
            sweep.claims.end(study.slot(index), FREE)  # the next worker (or a re-run) retries it, same parameters
            raise
        sweep.claims.end(study.slot(index), DONE)
        if study.trains and is_done(sweep, study, sweep.claims.states(f"slot:{study.name}#")):
            end_study(sweep, study)
    if sweep.expired():
        states = sweep.claims.states("slot:")
        sweep.cut = {s.name: (sum(states.get(s.slot(i)) == DONE for i in range(s.budget)), s.budget) for s in studies
                     if any(states.get(s.slot(i)) != DONE for i in range(s.budget))}


@contextmanager
def retried_if_preempted(study: optuna.Study, running: dict[str, int]):
    """A trial stopped by SIGTERM (its fit saved a resumable checkpoint) is failed at once, and its slot freed by the
    caller: the next worker retries it with the same parameters and continues from the checkpoint."""
    try:
        yield
    except SystemExit as error:
        number = running.get("trial")
        if preempted(error) and number is not None:
            trial = study.get_trials(deepcopy=False)[number]
            if trial.state == optuna.trial.TrialState.RUNNING:
                study.tell(number, state=optuna.trial.TrialState.FAIL)
                log.warning("trial %d of %s stopped by SIGTERM: its slot is free again", number, study.study_name)
        raise


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
    return checked_sizes(path, settings)[0]


def checked_sizes(path: str | Experiment, settings: SweepConfig) -> tuple[Experiment, dict[str, int | None]]:
    """The preflight, and the number of training examples of each phase task it counted on the way."""
    from lightning_modules.encoders import resolve
    from sweeps.config import RunConfig
    from sweeps.runs.preflight import (check_artifacts, check_cache, check_files, check_run, check_storage,
                                      check_tracking)

    experiment = path if isinstance(path, Experiment) else load_experiment(path)
    check_tracking(tracking_uri(settings.tracking_uri))
    check_artifacts(tracking_uri(settings.tracking_uri))
    check_storage(storage_url(settings.storage))
    check_cache()
    configs = [RunConfig(task=task, encoder=experiment.encoders[0],
                         data=final_evaluation_data(experiment.data_for(task), kind, task))
               for kind, task in experiment.phase_tasks()]
    for config in configs:  # a missing file of any phase fails in seconds, before rows are read
        check_files(config)
    for encoder in experiment.encoders:
        resolve(encoder)
    sizes = {}
    for config in configs:
        trains = get_spec(load_registry(config.data.tasks_files)[config.task].format).trains
        sizes[config.task] = check_run(config, training=trains).train_examples
    return experiment, sizes


def run_sweep(experiment: Experiment, settings: SweepConfig) -> str:
    """One worker's pass over the whole (preflighted) experiment; returns the sweep's parent run id."""
    from sweeps.runs.console import once_per_process
    from sweeps.tracking.store import experiment_id

    once_per_process()
    uri = tracking_uri(settings.tracking_uri)
    client = mlflow.MlflowClient(uri)
    parent = find_or_create_parent(client, experiment, experiment_id(client, uri, experiment.name, experiment.note()))
    deadline = time.time() + 60 * experiment.timeout_minutes if experiment.timeout_minutes else None
    url = storage_url(settings.storage)
    claims = Claims(url, GRACE_SECONDS, HEARTBEAT_SECONDS)
    sweep = Sweep(experiment, uri, rdb_storage(url), claims, parent, deadline)
    claims.start_heartbeat()
    try:
        work(sweep, study_graph(experiment))
    except BaseException:
        stopped = isinstance(sys.exc_info()[1], KeyboardInterrupt | SystemExit)  # Ctrl-C, SIGTERM
        client.set_terminated(parent, "KILLED" if stopped else "FAILED")
        raise
    finally:
        claims.close()
    for name, (trials, budget) in sweep.cut.items():
        print(f"time budget: {experiment.timeout_minutes:g} minutes reached; study {name} ran {trials} of {budget} "
              f"trials", file=sys.stderr, flush=True)
    if sweep.cut:
        client.set_tag(parent, "xstilts.budget_cut", ", ".join(sweep.cut)[:5000])
    client.set_terminated(parent, "FINISHED")
    return parent


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
    environments = worker_environments({**os.environ, STORAGE_ENV: storage, TRACKING_ENV: uri,
                                        PREFLIGHTED_ENV: str(Path(experiment.path))}, settings.gpus,
                                       settings.workers)
    processes = []
    try:
        for index in range(settings.workers):
            processes.append(start_group(command + ["--worker-index", str(index)], env=environments[index]))
        return max(p.wait() for p in processes)
    finally:  # stopped (Ctrl-C, SIGTERM) or done: each worker saves its checkpoint and ends, its children with it
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            stop_group(process, grace=WORKER_GRACE_SECONDS)
