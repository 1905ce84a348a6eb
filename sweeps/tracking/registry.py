"""Promotion: the best run for a target task, chosen by its English validation score (the zero-shot protocol: never
by other languages), registered as a version of `xstilts-<task>` with the alias `champion`."""

from __future__ import annotations

from dataclasses import dataclass

ALIAS = "champion"
SCORE = "selection/score"  # the English validation score each fit run was selected on


def model_name(task: str) -> str:
    return f"xstilts-{task}"


@dataclass
class Promotion:
    task: str
    version: str
    run_id: str
    score: float
    moved: bool


def candidate_runs(client, task: str) -> list:
    """Finished fits of `task` with a selection score and a checkpoint (not one retention deleted)."""
    from sweeps.tracking.retention import TAG

    experiments = [e.experiment_id for e in client.search_experiments()]
    query = (f"tags.`xstilts.task` = '{task}' and tags.`xstilts.command` = 'fit' "
             f"and attributes.status = 'FINISHED'")
    return [r for r in client.search_runs(experiments, query, max_results=50000)
            if SCORE in r.data.metrics and r.data.tags.get(TAG) != "deleted"]


def champion(client, task: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model_name(task), ALIAS)
    except MlflowException:
        return None


def promote(task: str, uri: str, ready_timeout: float = 300.0) -> Promotion:
    """Register the best run's checkpoint and point `champion` at it, unless the champion is as good already.

    Idempotent: a run has at most one version (a promotion killed after registering it, run again, reuses it), and
    the alias moves only once that version is READY."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(uri)
    runs = candidate_runs(client, task)
    if not runs:
        raise ValueError(f"no finished fit run of task {task!r} with an English validation score to promote")
    best = max(runs, key=lambda r: r.data.metrics[SCORE])
    score, name = best.data.metrics[SCORE], model_name(task)
    current = champion(client, task)
    if current is not None and float(current.tags.get("score", "-inf")) >= score:
        return Promotion(task, str(current.version), current.run_id, float(current.tags["score"]), moved=False)
    try:
        client.create_registered_model(name, description=f"xstilts checkpoints for {task}, best by {SCORE}")
    except MlflowException:
        pass  # it exists
    version = version_of_run(client, name, best.info.run_id)
    if version is None:
        tags = {"score": str(score), "metric": SCORE, "task": task,
                "intermediate": best.data.tags.get("xstilts.started_from", "none"),
                "sweep": best.data.tags.get("xstilts.sweep", "")}
        client.create_model_version(name, source=f"{best.info.artifact_uri}/checkpoint", run_id=best.info.run_id,
                                    tags=tags)
        version = version_of_run(client, name, best.info.run_id)  # the oldest, should another promotion race this
    version = wait_until_ready(client, name, version.version, ready_timeout)
    client.set_registered_model_alias(name, ALIAS, version.version)
    return Promotion(task, str(version.version), best.info.run_id, score, moved=True)


def version_of_run(client, name: str, run_id: str):
    """The registered model's version of `run_id` (the first one, if two promotions raced), or None. Versions of
    the same run registered after the first, by a race, are deleted."""
    found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if not found:
        return None
    first, *later = sorted(found, key=lambda v: int(v.version))
    for extra in later:
        client.delete_model_version(name, extra.version)
    return first


def wait_until_ready(client, name: str, version: str, timeout: float):
    """The version once READY; a version whose registration failed, or that is not READY in time, is an error."""
    import time

    deadline = time.time() + timeout
    while True:
        found = client.get_model_version(name, version)
        if found.status == "READY":
            return found
        if found.status == "FAILED_REGISTRATION" or time.time() > deadline:
            raise RuntimeError(f"version {version} of {name} is {found.status} ({found.status_message}): the alias "
                               f"{ALIAS} stays where it was")
        time.sleep(1.0)


def champions(uri: str) -> list[dict]:
    """Each target's champion with its scores."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    rows = []
    for model in client.search_registered_models(filter_string="name LIKE 'xstilts-%'"):
        task = model.name.removeprefix("xstilts-")
        version = champion(client, task)
        if version is None:
            continue
        metrics = client.get_run(version.run_id).data.metrics
        means = {k: v for k, v in metrics.items() if "/mean/" in k or "/zero_shot_mean/" in k}
        rows.append({"task": task, "version": version.version, "run_id": version.run_id,
                     "intermediate": version.tags.get("intermediate", ""), SCORE: float(version.tags["score"]),
                     **means})
    return rows
