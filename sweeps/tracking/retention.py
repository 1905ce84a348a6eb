"""What a store keeps: the checkpoints that matter, and how many bytes each experiment and phase uses.

A sweep's phase runs each save a checkpoint. Once a study ends, `study_ended` tags its best run
(`xstilts.checkpoint=best`) and deletes the checkpoints its `train.keep` setting does not keep:

    best (default)  the study's best, and any checkpoint a later phase started from or a model version points at
    all             every checkpoint of the study
    none            only what a later phase needs (an MLM or intermediate study's best) or a model version points at

A deleted checkpoint's run stays, with its scores, predictions and tags, tagged `xstilts.checkpoint=deleted`; the
copy in the local checkpoint cache goes too. `xstilts gc` applies the same rule to every ended study of an
experiment (a study that never ended is left alone: its best is not known yet), `xstilts du` shows the bytes.
Artifacts are listed and deleted through MLflow's artifact repositories: a local folder or a server alike.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

CHECKPOINT = "checkpoint"  # the artifact folder of a fit's checkpoint
TAG = "xstilts.checkpoint"  # "best" (kept as its study's best) or "deleted"
PHASES = "tags.`xstilts.kind` = 'phase' and attributes.status = 'FINISHED'"


@dataclass(frozen=True)
class Doomed:
    """A phase run whose checkpoint is no longer needed."""

    run_id: str
    experiment: str
    phase: str
    store_bytes: int
    cache_bytes: int
    reason: str


@dataclass(frozen=True)
class Usage:
    experiment: str
    phase: str  # "intermediate mnli", "target xnli from mnli", or the kind of other runs ("sweep", "trial", "fit")
    runs: int
    store_bytes: int
    cache_bytes: int


def artifact_bytes(client, run_id: str, path: str | None = None) -> int:
    """Bytes of a run's artifacts under `path` (all of them when None), as its artifact store lists them."""
    total = 0
    for entry in client.list_artifacts(run_id, path):
        total += artifact_bytes(client, run_id, entry.path) if entry.is_dir else (entry.file_size or 0)
    return total


def cached_folder(run_id: str) -> Path:
    """Where sweeps/tracking/artifacts.py downloads a run's checkpoint on this machine."""
    from lightning_modules.encoders import cache_dir

    return cache_dir() / "checkpoints" / run_id


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def phase_label(run) -> str:
    tags = run.data.tags
    if tags.get("xstilts.kind") != "phase":
        return tags.get("xstilts.kind") or tags.get("xstilts.command") or "other"
    label = f"{tags.get('xstilts.phase', '?')} {tags.get('xstilts.task', '?')}"
    return f"{label} from {tags.get('xstilts.started_from', 'none')}" if tags.get("xstilts.phase") == "target" \
        else label


def experiments(client, names: list[str] | tuple[str, ...] = ()) -> list:
    """The named MLflow experiments (every one when none is named); an unknown name is an error."""
    if not names:
        return list(client.search_experiments())
    found = []
    for name in names:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            known = ", ".join(sorted(e.name for e in client.search_experiments()))
            raise LookupError(f"experiment {name!r} is not in the store; its experiments: {known or 'none'}")
        found.append(experiment)
    return found


def doomed(client, experiment, study: str | None = None, keep: str | None = None) -> list[Doomed]:
    """The checkpoints of `experiment`'s ended studies (or of `study` alone) that retention does not keep; `keep`
    replaces each run's own train.keep (e.g. `best` after a sweep that kept all)."""
    phases = client.search_runs([experiment.experiment_id], PHASES, max_results=50000)
    started_from = {r.data.tags.get("xstilts.started_from_run_id") for r in phases}
    registered = {v.run_id for v in client.search_model_versions(max_results=10000)}
    by_study = defaultdict(list)
    for run in phases:
        by_study[run.data.tags.get("xstilts.study")].append(run)
    found = []
    for name, runs in by_study.items():
        ended = any(r.data.tags.get(TAG) == "best" for r in runs)
        if name is None or not ended or (study is not None and name != study):
            continue
        for run in runs:
            if run.data.tags.get(TAG) == "deleted":
                if folder_bytes(cached_folder(run.info.run_id)):  # a copy left in this machine's cache
                    found.append(_doomed(client, experiment, run, "checkpoint deleted, its cached copy left"))
            elif not _kept(run, keep or run.data.params.get("train.keep", "best"), started_from, registered):
                found.append(_doomed(client, experiment, run, f"not kept by keep="
                                     f"{keep or run.data.params.get('train.keep', 'best')} in study {name}"))
    return [d for d in found if d.store_bytes or d.cache_bytes]


def _kept(run, keep: str, started_from: set, registered: set) -> bool:
    best = run.data.tags.get(TAG) == "best"
    needed_later = best and run.data.tags.get("xstilts.phase") != "target"
    return keep == "all" or run.info.run_id in started_from or run.info.run_id in registered or needed_later or \
        (best and keep == "best")


def _doomed(client, experiment, run, reason: str) -> Doomed:
    deleted = run.data.tags.get(TAG) == "deleted"
    return Doomed(run.info.run_id, experiment.name, phase_label(run),
                  0 if deleted else artifact_bytes(client, run.info.run_id, CHECKPOINT),
                  folder_bytes(cached_folder(run.info.run_id)), reason)


def delete(client, uri: str, runs: list[Doomed]) -> int:
    """Delete the checkpoints (in the store and in this machine's cache) and tag their runs; returns the bytes."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    for item in runs:
        if item.store_bytes:
            artifact_uri = client.get_run(item.run_id).info.artifact_uri
            get_artifact_repository(artifact_uri, tracking_uri=uri).delete_artifacts(CHECKPOINT)
        client.set_tag(item.run_id, TAG, "deleted")
        shutil.rmtree(cached_folder(item.run_id), ignore_errors=True)
    return sum(item.store_bytes + item.cache_bytes for item in runs)


def study_ended(uri: str, experiment_name: str, study: str, best_run_id: str) -> list[Doomed]:
    """Tag the study's best phase run, then delete the checkpoints of the study that retention does not keep."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name)
    query = f"{PHASES} and tags.`xstilts.study` = '{study}' and tags.`{TAG}` = 'best'"
    for earlier in client.search_runs([experiment.experiment_id], query, max_results=50000):
        if earlier.info.run_id != best_run_id:  # a re-run with more trials found a better one
            client.delete_tag(earlier.info.run_id, TAG)
    client.set_tag(best_run_id, TAG, "best")
    gone = doomed(client, experiment, study)
    delete(client, uri, gone)
    return gone


def checkpoint_deleted(client, run_id: str) -> bool:
    return client.get_run(run_id).data.tags.get(TAG) == "deleted"


def usage(client, experiment) -> list[Usage]:
    """Bytes per phase (and per kind of other run) of one experiment: its artifacts in the store, and the copies of
    its checkpoints in this machine's cache."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for run in client.search_runs([experiment.experiment_id], max_results=50000):
        row = totals[phase_label(run)]
        row[0] += 1
        row[1] += artifact_bytes(client, run.info.run_id)
        row[2] += folder_bytes(cached_folder(run.info.run_id))
    return [Usage(experiment.name, phase, *numbers) for phase, numbers in sorted(totals.items())]


def human(size: int) -> str:
    value, shown = float(size), "B"
    for shown in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000:
            break
        value /= 1000
    return f"{size} B" if shown == "B" else f"{value:.1f} {shown}"
