"""Phases in order, the encoder (never the head) carried from each phase to the next.

A phase is identified by its configuration: task, where it started (the encoder, or the key of the phase before
it), training and data settings. A finished phase with the same key is found in MLflow and reused, so an
intermediate checkpoint is trained once for every target that starts from it, and a re-run trains nothing twice.

What a phase trains has a key of its own: the task it trains on (XQuAD's and MLQA's is SQuAD v1.1), the start, the
training settings and the data settings training reads (not the evaluation languages, splits, perturbations). Phases
with the same training key share one training run: the first trains (and evaluates its own languages), each other
evaluates that run's checkpoint on its languages. With `claims` (a sweep's workers), a phase and a training are each
claimed in the shared database first, so across workers and hosts each is done once; the others wait for it.
"""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass

from datamodules.tasks import load_registry

from sweeps.config import DataConfig, RunConfig, TrainConfig
from sweeps.runs.run import RunResult, evaluate, fit


@dataclass(frozen=True)
class Start:
    """Where a phase starts: a named encoder, or the checkpoint of an earlier phase's run."""

    encoder: str
    key: str  # the encoder's name, or the phase key of the run it came from
    run_id: str | None = None
    label: str = "none"  # the phases behind it, e.g. "squad_v1>mnli"; "none" for the bare encoder


WAIT_SECONDS = 1  # how often a worker waiting for another's phase looks again
EVALUATION_ONLY = ("languages", "eval_splits", "perturbations", "perturb_seed", "perturb_dictionary", "adversarial")
SELECTION = "selection/score"


def phase_key(kind: str, task: str, start: Start, train: TrainConfig, data: DataConfig) -> str:
    trained = train.model_dump(exclude=TrainConfig.NOT_IN_PHASE_KEY)
    content = json.dumps({"kind": kind, "task": task, "start": start.key, "train": trained,
                          "data": data.model_dump()}, sort_keys=True, default=str)
    return hashlib.sha256(content.encode()).hexdigest()[:24]


def training_key(kind: str, task: str, start: Start, train: TrainConfig, data: DataConfig) -> str:
    """The key of what a phase trains: its training task, and only the data settings training reads."""
    spec = load_registry(data.tasks_files)[task]
    return phase_key(kind, spec.train_task or task, start, train, training_data(data))


def training_data(data: DataConfig) -> DataConfig:
    """The data settings training reads: the evaluation-only ones at their defaults."""
    return data.evolve(**{name: DataConfig.model_fields[name].default for name in EVALUATION_ONLY})


def find_finished(client, experiment: str, key: str, tag: str = "xstilts.phase_key", with_checkpoint: bool = False):
    """The first finished run of `key` (a phase key, or with `tag` a training key); with `with_checkpoint`, the first
    whose checkpoint retention kept."""
    from sweeps.tracking.retention import TAG

    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs([found.experiment_id], max_results=100, order_by=["attributes.start_time ASC"],
                              filter_string=f"tags.`{tag}` = '{key}' and attributes.status = 'FINISHED'")
    usable = [r for r in runs if not with_checkpoint or r.data.tags.get(TAG) != "deleted"]
    return usable[0] if usable else None


def _result_of(run) -> RunResult:
    metrics = run.data.metrics
    trained_in = run.data.tags.get("xstilts.trained_in") or run.info.run_id
    return RunResult(run.info.run_id, dict(metrics), f"runs:/{trained_in}/checkpoint", metrics.get(SELECTION))


@contextmanager
def claimed(claims, key: str, finished):
    """Yields the finished run `finished()` finds, or None while this worker holds the claim on `key` (and should
    do the work). Without claims (a single run) nothing is claimed. The claim is freed afterwards either way: the
    finished MLflow run, not the claim, says that the work is done."""
    found = finished()
    while found is None and claims is not None and not claims.take(key):
        time.sleep(WAIT_SECONDS)
        found = finished()
    if found is not None:
        yield found
        return
    if claims is None:
        yield None
        return
    try:
        yield finished()  # finished between the last look and the claim: nothing to do
    finally:
        claims.end(key, "free")


def run_phase(kind: str, task: str, start: Start, train: TrainConfig, data: DataConfig, uri: str, experiment: str,
              parent_run_id: str | None = None, tags: dict | None = None, callbacks=(),
              claims=None, with_checkpoint: bool = False) -> tuple[RunResult, bool]:
    """(result, reused): the phase's run, trained now, evaluated from a run that trained the same, or found finished
    with the same configuration. A run whose checkpoint retention deleted is reused for its scores; with
    `with_checkpoint` (a later phase starts from it) the phase is trained again instead."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    key, trains = phase_key(kind, task, start, train, data), training_key(kind, task, start, train, data)
    with claimed(claims, f"phase:{key}", lambda: find_finished(client, experiment, key, with_checkpoint=with_checkpoint)) as existing:
        if existing is not None:
            return _result_of(existing), True
        tags = {**_phase_tags(kind, key, start, tags), "xstilts.train_key": trains}
        with claimed(claims, f"train:{trains}",
                     lambda: find_finished(client, experiment, trains, "xstilts.train_key", True)) as trained:
            config = RunConfig(task=task, encoder=start.encoder, data=data, train=train, tracking_uri=uri,
                               experiment=experiment, run_name=f"{kind}-{task}", tags=tags,
                               parent_run_id=parent_run_id)
            if trained is None:
                return fit(config, callbacks), False
        return _evaluate_trained(client, trained, config), True


def _evaluate_trained(client, trained, config: RunConfig) -> RunResult:
    """A phase whose training another phase did (same training key): that run's checkpoint on this task's data."""
    source, origin = _result_of(trained), trained.data.tags.get("xstilts.trained_in") or trained.info.run_id
    config = config.evolve(tags={**config.tags, "xstilts.trained_in": origin}, run_name=f"{config.run_name}-eval")
    result = evaluate(source.checkpoint_uri, config)
    if source.selection_score is not None:  # the training's English validation, which selected its checkpoint
        client.log_metric(result.run_id, SELECTION, source.selection_score)
    return RunResult(result.run_id, result.scores, source.checkpoint_uri, source.selection_score)


def evaluate_phase(task: str, start: Start, data: DataConfig, uri: str, experiment: str,
                   parent_run_id: str | None = None, tags: dict | None = None,
                   claims=None) -> tuple[RunResult, bool]:
    """A target evaluated straight from the start's encoder (BUCC, Tatoeba: nothing to train), also cached."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    key = phase_key("target", task, start, TrainConfig(), data)
    with claimed(claims, f"phase:{key}", lambda: find_finished(client, experiment, key)) as existing:
        if existing is not None:
            return _result_of(existing), True
        config = RunConfig(task=task, data=data, tracking_uri=uri, experiment=experiment, run_name=f"target-{task}",
                           tags=_phase_tags("target", key, start, tags), parent_run_id=parent_run_id)
        return evaluate(start.encoder, config), False


def _phase_tags(kind: str, key: str, start: Start, extra: dict | None) -> dict:
    """A phase run's tags; it carries its trial's tags too (study, trial, task ...), but is of kind `phase`."""
    return {"xstilts.phase": kind, "xstilts.phase_key": key, "xstilts.started_from": start.label,
            "xstilts.started_from_run_id": start.run_id or "", "xstilts.start_encoder": start.key, **(extra or {}),
            "xstilts.kind": "phase"}


def start_after(result: RunResult, kind: str, task: str, previous: Start, train: TrainConfig, data: DataConfig,
                uri: str) -> Start:
    label = task if previous.label == "none" else f"{previous.label}>{task}"
    from sweeps.tracking.artifacts import local_checkpoint

    return Start(encoder=str(local_checkpoint(result.checkpoint_uri, uri)), run_id=result.run_id,
                 key=phase_key(kind, task, previous, train, data), label=label)
