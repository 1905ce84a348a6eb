"""`xstilts sweep FILE --plan`: what the sweep will do, before it does anything — its studies in the order they
become ready, the trials of each (finished or new), the optimizer steps and training examples of a trial (from the
data sizes, epochs, batch size and accumulation), and GPU-hours at a given or measured throughput. It reads the stores
when they exist and creates nothing: no run, no study, no database."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import mlflow
from optuna.trial import FixedTrial

from sweeps.config import TrainConfig
from sweeps.engine.claims import DONE, read_states
from sweeps.engine.pipeline import training_data
from sweeps.engine.sweep import Study, grid_point, grid_size, study_graph, suggest
from sweeps.tracking.store import database_url, default_store, storage_url, store_exists

STEP_FIELDS = ("epochs", "batch_size", "accumulate", "max_steps")


@dataclass
class StudyPlan:
    study: Study
    finished: int
    steps: list[int]  # optimizer steps of each new trial (an upper bound where the space is continuous)
    examples: list[int]  # training examples each new trial reads
    bound: bool  # the figures are upper bounds: searched step settings in a continuous space
    shares_training_with: str | None  # an earlier study training the same task from the same start


def trial_settings(study: Study, index: int) -> tuple[TrainConfig, bool]:
    """The settings of trial slot `index`: exact in a finite space, else each searched step setting at its largest
    (and the upper bound flagged)."""
    base = TrainConfig(seed=study.seed)
    if grid_size(study.space) is not None:
        return suggest(FixedTrial(grid_point(study.space, study.name, study.seed, index)), study.space, base), False
    params, bound = {}, False
    for name, spec in study.space.items():
        if isinstance(spec, list):
            params[name] = max(spec) if name in STEP_FIELDS else spec[0]
        elif isinstance(spec, dict):
            params[name] = spec["high"] if name in STEP_FIELDS else spec["low"]
        bound = bound or (name in STEP_FIELDS and isinstance(spec, list | dict))
    return suggest(FixedTrial(params), study.space, base), bound


def optimizer_steps(examples: int, train: TrainConfig) -> int:
    """Lightning's count: every `accumulate` batches one step, and one more at an epoch's end for a partial group."""
    if train.max_steps > 0:
        return train.max_steps
    return math.ceil(math.ceil(examples / train.batch_size) / train.accumulate) * train.epochs


def plan_studies(studies: list[Study], sizes: dict[str, int | None], states: dict[str, str],
                 training_task) -> list[StudyPlan]:
    plans, trained_by = [], {}
    for study in studies:
        new = [i for i in range(study.budget) if states.get(study.slot(i)) != DONE]
        steps, examples, bound = [], [], False
        for index in new if study.trains else ():
            train, upper = trial_settings(study, index)
            n = sizes.get(study.task) or 0
            steps.append(optimizer_steps(n, train))
            examples.append(min(n * train.epochs, steps[-1] * train.batch_size * train.accumulate))
            bound = bound or upper
        what = (training_task(study.task), study.after.name if study.after else study.encoder,
                repr(sorted(study.space.items())), study.seed, repr(training_data(study.data)))
        shares = trained_by.get(what) if study.trains else None
        trained_by.setdefault(what, study.name)
        plans.append(StudyPlan(study, study.budget - len(new), steps, examples, bound, shares))
    return plans


def measured_throughput(uri: str, experiment: str) -> tuple[float, int] | None:
    """Training examples per second of this experiment's finished fit runs (whole runs: evaluation included)."""
    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = [r for r in client.search_runs([found.experiment_id], "tags.`xstilts.kind` = 'phase' and "
                                          "attributes.status = 'FINISHED'", max_results=5000)
            if "data.size.train" in r.data.params and r.info.end_time]
    seconds = sum((r.info.end_time - r.info.start_time) / 1000 for r in runs)
    examples = sum(int(r.data.params["data.size.train"]) * int(r.data.params.get("train.epochs", 1)) for r in runs)
    return (examples / seconds, len(runs)) if seconds > 0 else None


def format_plan(experiment, plans: list[StudyPlan], throughput: float | None, measured: tuple | None) -> str:
    width = max(len(p.study.name) for p in plans)
    lines = [f"plan of {experiment.name}: {len(plans)} studies; nothing is trained and no run is created",
             f"{'study':<{width}}  {'trials':>6}  {'finished':>8}  {'new':>4}  {'steps/trial':>12}  "
             f"{'examples':>10}  note"]
    total_examples = total_steps = new_trials = 0
    for plan in plans:
        study, new = plan.study, plan.study.budget - plan.finished
        if not study.trains:
            note, steps, examples = "evaluation only", "-", "-"
        else:
            mark = "≤ " if plan.bound else ""
            steps = f"{mark}{max(plan.steps)}" if plan.steps else "-"
            examples = f"{mark}{sum(plan.examples)}" if plan.examples else "0"
            note = f"trained once with {plan.shares_training_with}" if plan.shares_training_with else ""
            if plan.study.after is not None:
                note = (note + "; " if note else "") + f"after {plan.study.after.name}"
            if not plan.shares_training_with:
                total_examples += sum(plan.examples)
                total_steps += sum(plan.steps)
        new_trials += new
        lines.append(f"{study.name:<{width}}  {study.budget:>6}  {plan.finished:>8}  {new:>4}  {steps:>12}  "
                     f"{examples:>10}  {note}")
    lines.append(f"new: {new_trials} trials, {total_steps} optimizer steps, {total_examples} training examples "
                 f"(evaluation not counted)")
    if throughput is None and measured is not None:
        throughput = measured[0]
        lines.append(f"throughput {throughput:.1f} examples/s, measured from {measured[1]} finished phase runs of "
                     f"this experiment (whole runs, evaluation included)")
    if throughput:
        lines.append(f"at {throughput:.1f} training examples/s per GPU: {total_examples / throughput / 3600:.2f} "
                     f"GPU-hours of training")
    else:
        lines.append("GPU-hours: give --throughput (training examples per second per GPU), or run a few phases "
                     "first to measure it")
    return "\n".join(lines)


def plan(experiment, sizes: dict[str, int | None], settings) -> str:
    from datamodules.tasks import load_registry

    registry = load_registry(experiment.data.tasks_files)
    studies = study_graph(experiment)
    states = read_states(storage_url(settings.storage, create=False), "slot:")
    plans = plan_studies(studies, sizes, states, lambda task: registry[task].train_task or task)
    explicit = settings.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    uri = database_url(explicit) if explicit else f"sqlite:///{default_store() / 'mlflow.db'}"
    measured = measured_throughput(uri, experiment.name) if store_exists(uri) else None
    return format_plan(experiment, plans, settings.throughput, measured)
