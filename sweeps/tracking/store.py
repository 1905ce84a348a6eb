"""MLflow tracking: where the store is, one context manager per run, and Lightning's logger bound to that run.

Default store: `mlruns/` at the project root (sqlite database `mlflow.db` and `artifacts/`). MLFLOW_TRACKING_URI
or `--tracking-uri` points elsewhere (another sqlite file, PostgreSQL, or an `http://` tracking server).
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def project_root() -> Path:
    """The checkout holding this package, or the working directory for an installed copy."""
    return PROJECT_ROOT if (PROJECT_ROOT / "pyproject.toml").exists() else Path.cwd()


def default_store() -> Path:
    return project_root() / "mlruns"


def database_url(url: str) -> str:
    """A database URL SQLAlchemy can open here: it reads a bare `postgresql://` with psycopg 3 (SQLAlchemy 2.1);
    where only psycopg2 is installed (the dev extra's psycopg2-binary), the URL names that driver."""
    if url.startswith("postgresql://"):
        from importlib.util import find_spec

        if find_spec("psycopg") is None and find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def tracking_uri(explicit: str | None = None) -> str:
    if explicit:
        return database_url(explicit)
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return database_url(os.environ["MLFLOW_TRACKING_URI"])
    default_store().mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{default_store() / 'mlflow.db'}"


def artifact_location(uri: str, experiment: str) -> str | None:
    """Artifacts of a sqlite store live beside its database; a server or other database decides for itself."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts" / experiment).resolve().as_uri()


def experiment_id(client, uri: str, name: str) -> str:
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location(uri, name))
    except Exception:  # another worker created it first
        existing = client.get_experiment_by_name(name)
        if existing is None:
            raise
        return existing.experiment_id


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=project_root(),
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


class Run:
    """One MLflow run, written through the client (no global "active run" state)."""

    def __init__(self, client, uri: str, run_id: str):
        self.client, self.uri, self.run_id = client, uri, run_id

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(key, str(value)[:6000]) for key, value in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start: start + 100])

    def log_metrics(self, metrics: dict, step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        for start in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[start: start + 1000])

    def set_tags(self, tags: dict) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def log_artifacts(self, folder: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def artifact_folder(self, artifact_path: str) -> Path | None:
        """Where an artifact of this run lies when the run's artifacts are on this machine's disk (a sqlite store's):
        a large artifact is then written there in place, not written elsewhere and copied. None for a server's."""
        from urllib.parse import urlparse
        from urllib.request import url2pathname

        uri = urlparse(self.client.get_run(self.run_id).info.artifact_uri)
        return Path(url2pathname(uri.path)) / artifact_path if uri.scheme == "file" else None

    def log_dict(self, data: dict, file_name: str) -> None:
        self.client.log_dict(self.run_id, data, file_name)

    def log_table(self, frame, file_name: str) -> None:
        """A table the MLflow UI shows (`.parquet`: compressed). MLflow lists a run's tables in one tag, whose value
        is limited (8000 characters): past that, a table is logged as a plain Parquet artifact at the same path."""
        import json
        import tempfile

        from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS
        from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

        listed = json.loads(self.client.get_run(self.run_id).data.tags.get(MLFLOW_LOGGED_ARTIFACTS, "[]"))
        if len(json.dumps([*listed, {"path": file_name, "type": "table"}])) <= MAX_TAG_VAL_LENGTH:
            self.client.log_table(self.run_id, frame, file_name)
            return
        with tempfile.TemporaryDirectory(prefix="xstilts-table-") as tmp:
            path = Path(tmp) / Path(file_name).name
            frame.to_parquet(path, index=False)
            parent = str(Path(file_name).parent)
            self.client.log_artifact(self.run_id, str(path), None if parent == "." else parent)

    def lightning_logger(self):
        """Lightning's MLflow logger writing into this run, leaving the run's end to `tracked_run`."""
        from lightning.pytorch.loggers import MLFlowLogger

        class RunLogger(MLFlowLogger):
            def finalize(self, status: str = "success") -> None:
                pass  # Lightning calls this after fit and after test; the run's end drains the queue once

        # Buffered, the queue's thread waits on its stop event, not on a 1 s poll of the queue: draining it when
        # the run ends takes milliseconds, not a second (MLflow's default).
        os.environ.setdefault("MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS", "1")
        return RunLogger(tracking_uri=self.uri, run_id=self.run_id, synchronous=False)


class RunFailed(RuntimeError):
    """A run that had started failed; it is marked FAILED in MLflow. The message is the cause's."""

    def __init__(self, run_id: str, cause: BaseException):
        self.run_id, self.cause = run_id, cause
        super().__init__(f"{str(cause) or type(cause).__name__} (MLflow run {run_id} marked FAILED)")


def _killed(error: BaseException) -> bool:
    """Ctrl-C, and a trial an Optuna pruner stopped (only possible where optuna is imported)."""
    optuna = sys.modules.get("optuna")
    return isinstance(error, KeyboardInterrupt) or optuna is not None and isinstance(error, optuna.TrialPruned)


@contextmanager
def tracked_run(uri: str, experiment: str, run_name: str, tags: dict | None = None, parent_run_id: str | None = None):
    """A new MLflow run that ends FINISHED, or FAILED (KILLED on Ctrl-C or pruning) if the block raises; an error
    inside it is raised again as RunFailed (naming the run), once: an enclosing run passes it on."""
    import mlflow
    from mlflow.entities import RunStatus

    client = mlflow.MlflowClient(uri)
    all_tags = {"mlflow.source.git.commit": git_commit(), "mlflow.runName": run_name, **(tags or {})}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    # a tracking server takes string tag values only (a sqlite store converts them itself)
    created = client.create_run(experiment_id(client, uri, experiment), run_name=run_name,
                                tags={key: str(value) for key, value in all_tags.items()})
    status = RunStatus.FAILED
    try:
        yield Run(client, uri, created.info.run_id)
        status = RunStatus.FINISHED
    except BaseException as error:
        if _killed(error):
            status = RunStatus.KILLED
        if isinstance(error, Exception) and not isinstance(error, RunFailed) and not _killed(error):
            raise RunFailed(created.info.run_id, error) from error
        raise
    finally:
        # waits until every asynchronously logged metric is written (mlflow.flush_async_logging() would flush the
        # store of the global tracking URI, by default a mlflow.db in the working directory, not this run's)
        client.set_terminated(created.info.run_id, RunStatus.to_string(status))
