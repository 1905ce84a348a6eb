"""Phases in order, the encoder (never the head) carried from each phase to the next.

A phase is identified by its configuration: task, where it started (the encoder, or the key of the phase before
it), training and data settings. A finished phase with the same key is found in MLflow and reused, so an
intermediate checkpoint is trained once for every target that starts from it, and a re-run trains nothing twice.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from sweeps.config import DataConfig, RunConfig, TrainConfig
from sweeps.runs.run import RunResult, evaluate, fit


@dataclass(frozen=True)
class Start:
    """Where a phase starts: a named encoder, or the checkpoint of an earlier phase's run."""

    encoder: str
    key: str  # the encoder's name, or the phase key of the run it came from
    run_id: str | None = None
    label: str = "none"  # the phases behind it, e.g. "squad_v1>mnli"; "none" for the bare encoder


def phase_key(kind: str, task: str, start: Start, train: TrainConfig, data: DataConfig) -> str:
    trained = train.model_dump(exclude=TrainConfig.NOT_IN_PHASE_KEY)
    content = json.dumps({"kind": kind, "task": task, "start": start.key, "train": trained,
                          "data": data.model_dump()}, sort_keys=True, default=str)
    return hashlib.sha256(content.encode()).hexdigest()[:24]


def find_finished(client, experiment: str, key: str, with_checkpoint: bool = False):
    """The first finished run of phase `key`; with `with_checkpoint`, the first whose checkpoint retention kept."""
    from sweeps.tracking.retention import TAG

    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs([found.experiment_id], max_results=100, order_by=["attributes.start_time ASC"],
                              filter_string=f"tags.`xstilts.phase_key` = '{key}' and attributes.status = 'FINISHED'")
    usable = [r for r in runs if not with_checkpoint or r.data.tags.get(TAG) != "deleted"]
    return usable[0] if usable else None


def _result_of(run) -> RunResult:
    metrics = run.data.metrics
    return RunResult(run.info.run_id, dict(metrics), f"runs:/{run.info.run_id}/checkpoint",
                     metrics.get("selection/score"))


def run_phase(kind: str, task: str, start: Start, train: TrainConfig, data: DataConfig, uri: str, experiment: str,
              parent_run_id: str | None = None, tags: dict | None = None, callbacks=(),
              with_checkpoint: bool = False) -> tuple[RunResult, bool]:
    """(result, reused): the phase's run, trained now or found finished with the same configuration. A run whose
    checkpoint retention deleted is reused for its scores; `with_checkpoint` (a later phase starts from it) trains
    the phase again instead."""
    import mlflow

    key = phase_key(kind, task, start, train, data)
    existing = find_finished(mlflow.MlflowClient(uri), experiment, key, with_checkpoint)
    if existing is not None:
        return _result_of(existing), True
    config = RunConfig(task=task, encoder=start.encoder, data=data, train=train, tracking_uri=uri,
                       experiment=experiment, run_name=f"{kind}-{task}", tags=_phase_tags(kind, key, start, tags),
                       parent_run_id=parent_run_id)
    return fit(config, callbacks), False


def evaluate_phase(task: str, start: Start, data: DataConfig, uri: str, experiment: str,
                   parent_run_id: str | None = None, tags: dict | None = None) -> tuple[RunResult, bool]:
    """A target evaluated straight from the start's encoder (BUCC, Tatoeba: nothing to train), also cached."""
    import mlflow

    key = phase_key("target", task, start, TrainConfig(), data)
    existing = find_finished(mlflow.MlflowClient(uri), experiment, key)
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

    return Start(encoder=str(local_checkpoint(f"runs:/{result.run_id}/checkpoint", uri)), run_id=result.run_id,
                 key=phase_key(kind, task, previous, train, data), label=label)
