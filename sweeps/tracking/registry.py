"""Promotion: the best run for a target task among the runs of one experiment (or of an explicit list), chosen by its
English validation score (the zero-shot protocol: never by other languages), registered as a version of the
experiment's model (`xstilts-<experiment>-<task>` by default) with the alias `champion`. Experiments never compete
with each other: promoting in one leaves every other experiment's champion where it is.

A version is an MLflow pyfunc model holding a copy of the run's checkpoint (sweeps/tracking/pyfunc.py), logged as the
run's model (the runs table's Models column), so `mlflow.pyfunc.load_model("models:/<name>@champion")` predicts
and `mlflow models serve` serves it; with `checkpoint_only`, the version is the run's checkpoint folder itself."""

from __future__ import annotations

from dataclasses import dataclass

from sweeps.config.schema import PromoteConfig

ALIAS = "champion"
SCORE = "selection/score"  # the English validation score each fit run was selected on
TASK_TAG, EXPERIMENTS_TAG = "xstilts.task", "xstilts.experiments"  # on each registered model xstilts made


@dataclass
class Promotion:
    task: str
    model: str  # the registered model's name
    version: str
    run_id: str
    score: float
    moved: bool


def candidate_runs(client, task: str, experiment_ids: list[str]) -> list:
    """Finished fits of `task` with a selection score and a checkpoint (not one retention deleted)."""
    from sweeps.tracking.retention import TAG

    query = (f"tags.`xstilts.task` = '{task}' and tags.`xstilts.command` = 'fit' "
             f"and attributes.status = 'FINISHED'")
    return [r for r in client.search_runs(experiment_ids, query, max_results=50000)
            if SCORE in r.data.metrics and r.data.tags.get(TAG) != "deleted"]


def scope(client, task: str, names: tuple[str, ...]) -> list:
    """The experiments whose runs compete: those named, else the one holding finished fit runs of the task."""
    if names:
        found = [client.get_experiment_by_name(name) for name in names]
        missing = [name for name, experiment in zip(names, found) if experiment is None]
        if missing:
            raise ValueError(f"--experiment {missing[0]}: no MLflow experiment of that name in this store")
        return found
    experiments = list(client.search_experiments(max_results=50000))
    holding = {r.info.experiment_id for r in candidate_runs(client, task, [e.experiment_id for e in experiments])}
    found = [e for e in experiments if e.experiment_id in holding]
    if len(found) > 1:
        raise ValueError(f"task {task!r} has finished fit runs in several experiments ("
                         f"{', '.join(sorted(e.name for e in found))}): pass --experiment NAME (or several, "
                         f"comma-separated) to choose the runs that compete")
    return found


def champion(client, name: str):
    """The version of registered model `name` that the alias points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, ALIAS)
    except MlflowException:
        return None


def promote(task: str, uri: str, settings: PromoteConfig = PromoteConfig(), ready_timeout: float = 300.0) -> Promotion:
    """Register the best run's checkpoint and point `champion` at it, unless the champion is as good already.

    Idempotent: a run has at most one version (a promotion killed after registering it, run again, reuses it), and
    the alias moves only once that version is READY."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiments = scope(client, task, settings.experiments)
    runs = candidate_runs(client, task, [e.experiment_id for e in experiments]) if experiments else []
    if not runs:
        where = f" in experiment {', '.join(settings.experiments)}" if settings.experiments else ""
        raise ValueError(f"no finished fit run of task {task!r}{where} with an English validation score to promote")
    best = max(runs, key=lambda r: r.data.metrics[SCORE])
    score, name = best.data.metrics[SCORE], settings.registered_name(task, [e.name for e in experiments])
    current = champion(client, name)
    competing = {r.info.run_id for r in runs}
    if current is not None and current.run_id in competing and float(current.tags.get("score", "-inf")) >= score:
        return Promotion(task, name, str(current.version), current.run_id, float(current.tags["score"]), moved=False)
    registered_model(client, name, task, [e.name for e in experiments])
    version = version_of_run(client, name, best.info.run_id)
    if version is None:
        tags = {"score": str(score), "metric": SCORE, "task": task,
                "intermediate": best.data.tags.get("xstilts.started_from", "none"),
                "sweep": best.data.tags.get("xstilts.sweep", ""), "experiment": experiments[0].name
                if len(experiments) == 1 else "+".join(e.name for e in experiments)}
        if settings.checkpoint_only:
            client.create_model_version(name, source=f"{best.info.artifact_uri}/checkpoint", run_id=best.info.run_id,
                                        tags=tags)
        else:
            model = champion_model(client, best, name)
            # the model's own location, not models:/<model id>: MLflow resolves that with the global tracking URI
            client.create_model_version(name, source=model.artifact_location, run_id=best.info.run_id, tags=tags,
                                        model_id=model.model_id)
        version = version_of_run(client, name, best.info.run_id)  # the oldest, should another promotion race this
    version = wait_until_ready(client, name, version.version, ready_timeout)
    client.set_registered_model_alias(name, ALIAS, version.version)
    return Promotion(task, name, str(version.version), best.info.run_id, score, moved=True)


def registered_model(client, name: str, task: str, experiments: list[str]) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, tags={TASK_TAG: task, EXPERIMENTS_TAG: "+".join(experiments)},
                                       description=f"xstilts champions of {task} in {', '.join(experiments)}, "
                                                   f"best by {SCORE} (English validation)")
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":  # another promotion (or host) registered it first
            raise


def champion_model(client, run, name: str):
    """The run's pyfunc model (sweeps/tracking/pyfunc.py), a LoggedModel logged now unless a finished one is there."""
    import tempfile
    from pathlib import Path

    from mlflow.entities import LoggedModelOutput, LoggedModelStatus

    from sweeps.tracking.pyfunc import save_model

    run_id = run.info.run_id
    logged = client.search_logged_models([run.info.experiment_id],
                                         filter_string=f"source_run_id = '{run_id}' AND name = '{name}'")
    ready = [m for m in logged if m.status == LoggedModelStatus.READY]
    if ready:
        return ready[0]
    model = client.create_logged_model(run.info.experiment_id, name=name, source_run_id=run_id,
                                       tags={"xstilts.run_id": run_id}, model_type="xstilts-pyfunc")
    try:
        with tempfile.TemporaryDirectory(prefix="xstilts-champion-") as tmp:
            client.download_artifacts(run_id, "checkpoint", tmp)
            client.log_model_artifacts(model.model_id, str(save_model(Path(tmp) / "checkpoint", Path(tmp) / "model")))
    except BaseException:
        client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        raise
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
    return client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)


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


def champions(uri: str, experiments: tuple[str, ...] = ()) -> list[dict]:
    """Each registered model's champion with its scores (only those of `experiments`, when given)."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    rows = []
    for model in client.search_registered_models(max_results=1000):
        task, scope_ = model.tags.get(TASK_TAG), model.tags.get(EXPERIMENTS_TAG, "")
        if task is None or experiments and not set(scope_.split("+")) & set(experiments):
            continue
        version = champion(client, model.name)
        if version is None:
            continue
        metrics = client.get_run(version.run_id).data.metrics
        means = {k: v for k, v in metrics.items() if "/mean/" in k or "/zero_shot_mean/" in k}
        rows.append({"model": model.name, "task": task, "experiments": scope_, "version": version.version,
                     "run_id": version.run_id, "intermediate": version.tags.get("intermediate", ""),
                     SCORE: float(version.tags["score"]), **means})
    return rows
