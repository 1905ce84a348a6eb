"""MLflow tracking: where the store is, one context manager per run, and Lightning's logger bound to that run.

Default store: `mlruns/` at the project root (sqlite database `mlflow.db` and `artifacts/`). MLFLOW_TRACKING_URI
or `--tracking-uri` points elsewhere (another sqlite file, PostgreSQL, or an `http://` tracking server).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parents[2]


ARTIFACT_ROOT_ENV = "XSTILTS_ARTIFACT_ROOT"


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


def store_exists(uri: str) -> bool:
    """Whether a tracking store holds MLflow's tables already (looked at without creating them); a server: yes."""
    if not re.match(r"^[a-z]+(\+[a-z0-9_]+)?://", uri) or uri.startswith(("http://", "https://", "databricks")):
        return True
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return False
    import sqlalchemy as sa

    engine = sa.create_engine(uri)
    try:
        return sa.inspect(engine).has_table("experiments")
    finally:
        engine.dispose()


def artifact_root() -> str | None:
    """The artifact root given by --artifact-root (through the environment, so that sweep workers see it too)."""
    root = os.environ.get(ARTIFACT_ROOT_ENV)
    if not root:
        return None
    return root.rstrip("/") if re.match(r"^[a-z0-9]+://", root) else Path(root).resolve().as_uri()


def storage_url(explicit: str | None, create: bool = True) -> str | None:
    """The Optuna storage of sweeps (and `xstilts dashboard`): `explicit`, else sqlite in mlruns/; with create=False,
    None where that sqlite file does not exist yet."""
    if explicit:
        return database_url(explicit)
    if not create:
        return f"sqlite:///{default_store() / 'optuna.db'}" if (default_store() / "optuna.db").exists() else None
    default_store().mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{default_store() / 'optuna.db'}"


def artifact_location(uri: str, experiment: str) -> str | None:
    """A new experiment's artifacts: under the artifact root if one is given; else beside a sqlite store's database;
    a server decides for itself (proxied artifacts). A database store needs a root (preflight checks it): MLflow
    would put each host's artifacts in its own working directory."""
    if artifact_root():
        return f"{artifact_root()}/{experiment}"
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts" / experiment).resolve().as_uri()


NOTE = "mlflow.note.content"  # an experiment's description in the MLflow UI


def experiment_id(client, uri: str, name: str, description: str | None = None) -> str:
    """The experiment's id, created if needed. `description` (a sweep's, from its file) replaces the experiment's
    description; without it, an experiment that has none gets the generic one."""
    existing = client.get_experiment_by_name(name)
    if existing is None:
        try:
            client.create_experiment(name, artifact_location=artifact_location(uri, name))
        except Exception:  # another worker created it first
            if client.get_experiment_by_name(name) is None:
                raise
        existing = client.get_experiment_by_name(name)
    note = description if description is not None else None if NOTE in existing.tags else (
        f"xstilts runs of experiment `{name}` (fit, evaluate, compare): each run's tags name its command "
        f"(`xstilts.command`) and task (`xstilts.task`); `xstilts promote TASK --experiment {name}` registers a "
        f"task's best fit run.")
    if note is not None and existing.tags.get(NOTE) != note:
        try:
            client.set_experiment_tag(existing.experiment_id, NOTE, note)
        except Exception:  # another worker (host) set it at the same moment: a server's database refuses the second
            if client.get_experiment(existing.experiment_id).tags.get(NOTE) is None:
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
    """One MLflow run, written through the client (no global "active run" state).

    Once the store cannot be reached (sweeps/tracking/faults.py bounds each call), everything else the run writes
    goes to its local spool (sweeps/tracking/spool.py) without another network call; `xstilts sync` sends it."""

    def __init__(self, client, uri: str, run_id: str, spool_dir: str | None = None):
        self.client, self.uri, self.run_id = client, uri, run_id
        self.spool_dir = spool_dir
        self.offline: str | None = None  # why the store is out of reach, once it is
        self.spool = None
        self._background = None  # the thread that sends Lightning's metrics
        self._offline_lock = threading.Lock()

    def _go_offline(self, error: BaseException) -> None:
        from sweeps.tracking.faults import first_line
        from sweeps.tracking.spool import Spool, spool_root

        with self._offline_lock:  # the metrics thread and the main thread may both find the store gone
            if self.offline is not None:
                return
            reason = f"{self.uri} unreachable at {time.strftime('%H:%M:%S')} ({first_line(error)})"
            self.spool = Spool(spool_root(self.spool_dir), self.uri, self.run_id, reason)
            self.offline = reason  # set last: a thread that sees it finds the spool ready
            log.warning("tracking store %s; run %s continues into %s", self.offline, self.run_id, self.spool.folder)

    def _online(self, call) -> bool:
        """Runs `call` against the store: True when it ran; False when the store is (or has just gone) out of
        reach, the run then being offline (what follows goes to the spool)."""
        from sweeps.tracking.faults import unreachable

        if self.offline is not None:
            return False
        try:
            call()
            return True
        except Exception as error:
            if not unreachable(error):
                raise
            self._go_offline(error)
            return False

    def _send(self, op: dict, call) -> None:
        if not self._online(call):
            self.spool.append(op)

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        values = {key: str(value)[:6000] for key, value in params.items()}

        def call():
            items = [Param(key, value) for key, value in values.items()]
            for start in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=items[start: start + 100])

        self._send({"op": "params", "params": values}, call)

    def log_metrics(self, metrics: dict, step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        values = {key: float(value) for key, value in metrics.items()}

        def call():
            items = [Metric(key, value, now, step) for key, value in values.items()]
            for start in range(0, len(items), 1000):
                self.client.log_batch(self.run_id, metrics=items[start: start + 1000])

        self._send({"op": "metrics", "metrics": values, "step": step, "timestamp": now}, call)

    def log_metrics_later(self, metrics: dict, step: int) -> None:
        """Sent by a background thread: training does not wait for the store."""
        from concurrent.futures import ThreadPoolExecutor

        if self._background is None:
            self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xstilts-tracking")
        self._background.submit(self.log_metrics, metrics, step)

    def drain(self) -> None:
        """Wait for the metrics sent in the background (bounded: once the store is out of reach they are spooled)."""
        if self._background is not None:
            self._background.shutdown(wait=True)
            self._background = None

    def log_inputs(self, inputs: list[dict]) -> None:
        """Datasets the run read (sweeps/tracking/datasets.py: their JSON-able descriptions)."""
        from sweeps.tracking.datasets import as_entities

        self._send({"op": "inputs", "inputs": inputs},
                   lambda: self.client.log_inputs(self.run_id, datasets=as_entities(inputs)))

    def set_tags(self, tags: dict) -> None:
        values = {key: str(value) for key, value in tags.items()}

        def call():
            for key, value in values.items():
                self.client.set_tag(self.run_id, key, value)

        self._send({"op": "tags", "tags": values}, call)

    def log_artifacts(self, folder: Path, artifact_path: str | None = None) -> None:
        """Upload a folder; one that cannot be uploaded is kept in the spool."""
        if not self._online(lambda: self.client.log_artifacts(self.run_id, str(folder), artifact_path)):
            self.spool.add_artifacts(Path(folder), artifact_path)

    def artifact_folder(self, artifact_path: str) -> Path | None:
        """Where an artifact of this run lies when the run's artifacts are on this machine's disk (a sqlite store's):
        a large artifact is then written there in place, not written elsewhere and copied. None for a server's."""
        from sweeps.tracking.artifacts import local_artifacts
        from sweeps.tracking.faults import unreachable

        if self.offline is not None:
            return None
        try:
            folder = local_artifacts(self.client.get_run(self.run_id).info.artifact_uri)
        except Exception as error:
            if not unreachable(error):
                raise
            self._go_offline(error)
            return None
        return folder / artifact_path if folder is not None else None

    def log_dict(self, data: dict, file_name: str) -> None:
        self._send({"op": "dict", "data": data, "file": file_name},
                   lambda: self.client.log_dict(self.run_id, data, file_name))

    @contextmanager
    def tables(self):
        """Tables the MLflow UI shows: `tables.add(frame, "dir/name.parquet")` writes each one as it comes; when the
        block ends they go to the store in one upload (one call for a whole evaluation's predictions, not one per
        language), listed in the tag by which MLflow shows a run's tables. That tag is limited (8000 characters):
        tables past it, or sent while the store is out of reach (then spooled), are plain Parquet artifacts at the
        same paths. A block left by an exception sends nothing."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="xstilts-tables-") as tmp:
            tables = Tables(Path(tmp))
            yield tables
            if tables.paths:
                self.log_artifacts(Path(tmp))
                self._online(lambda: self._list_tables(tables.paths))

    def _list_tables(self, paths: list[str]) -> None:
        import json

        from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS
        from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

        listed = json.loads(self.client.get_run(self.run_id).data.tags.get(MLFLOW_LOGGED_ARTIFACTS, "[]"))
        for path in paths:
            entry = {"path": path, "type": "table"}
            if entry not in listed and len(json.dumps([*listed, entry])) <= MAX_TAG_VAL_LENGTH:
                listed.append(entry)
        self.client.set_tag(self.run_id, MLFLOW_LOGGED_ARTIFACTS, json.dumps(listed))

    def lightning_logger(self):
        """A Lightning logger writing into this run in the background, leaving the run's end to `tracked_run`."""
        from lightning.pytorch.loggers import Logger
        from lightning.pytorch.utilities import rank_zero_only

        run = self

        class RunLogger(Logger):
            name = "xstilts"

            @property
            def version(self):
                return run.run_id

            @rank_zero_only
            def log_metrics(self, metrics, step=None):
                run.log_metrics_later({k: float(v) for k, v in metrics.items()}, step or 0)

            def log_hyperparams(self, params, *args, **kwargs):
                pass  # the run's parameters are logged by the command itself

        return RunLogger()

    def end(self, status: str) -> None:
        """Mark the run ended (in the spool when the store is out of reach)."""
        self.drain()
        if not self._online(lambda: self.client.set_terminated(self.run_id, status)):
            self.spool.finish(status)

    def spooled_message(self, status: str) -> str:
        return (f"tracking store {self.offline}: run {self.run_id} ({status}) is kept in {self.spool.folder}; "
                f"`xstilts sync` sends it once the store answers")


class Tables:
    """The tables of a `Run.tables()` block, written as Parquet files under `folder` at their artifact paths."""

    def __init__(self, folder: Path):
        self.folder, self.paths = folder, []

    def add(self, frame, path: str) -> None:
        if not path.endswith(".parquet"):
            raise ValueError(f"a table's path must end in .parquet: {path}")
        target = self.folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(target, index=False)
        self.paths.append(path)


class UntrackedRun:
    """A run that records nothing: what a distributed fit's ranks other than 0 write to (rank 0 alone tracks the
    run, sweeps/runs/distributed.py), and a benchmark's `fit` with tracking off."""

    run_id = "untracked"
    client = None
    offline = None

    def __getattr__(self, name):
        if name.startswith(("log_", "set_")):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def lightning_logger(self):
        return False

    def drain(self) -> None:
        pass

    def artifact_folder(self, artifact_path):
        return None

    @contextmanager
    def tables(self):
        import tempfile

        with tempfile.TemporaryDirectory(prefix="xstilts-tables-") as tmp:
            yield Tables(Path(tmp))


@contextmanager
def untracked_run(*args, **kwargs):
    yield UntrackedRun()


SYSTEM_METRICS_ENV = "XSTILTS_SYSTEM_METRICS_INTERVAL"


@contextmanager
def system_metrics(run: Run, interval: float | None = None):
    """CPU, memory, disk and network use (and GPU, through nvidia-ml-py, where there is one) logged by MLflow's monitor as
    `system/...` metrics of `run` every `interval` seconds while the block runs (default: $XSTILTS_SYSTEM_METRICS_
    INTERVAL, else 10; 0: none). A block shorter than one interval logs none."""
    seconds = interval if interval is not None else float(os.environ.get(SYSTEM_METRICS_ENV) or 10)
    if seconds <= 0 or run.offline is not None or run.client is None:  # offline, or a rank that tracks nothing
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    # the monitor stops at its first call the store does not answer, and says so in its own words: the run's one line
    # about the store out of reach (the spool's) is the one the user sees
    logging.getLogger("mlflow.system_metrics").setLevel(logging.CRITICAL)
    monitor = SystemMetricsMonitor(run.run_id, sampling_interval=seconds, tracking_uri=run.uri)
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()


def open_store(uri: str, experiment: str):
    """(client, experiment id), or TrackingUnavailable in one line when the store does not answer."""
    import mlflow

    from sweeps.tracking.faults import TrackingUnavailable, first_line, timeout_seconds, unreachable

    client = mlflow.MlflowClient(uri)
    try:
        return client, experiment_id(client, uri, experiment)
    except Exception as error:
        if not unreachable(error):
            raise
        raise TrackingUnavailable(f"tracking store {uri} did not answer within {timeout_seconds():.0f} s "
                                  f"({first_line(error)}); nothing was run") from None


def send_spooled(client, uri: str, spool_dir: str | None = None) -> None:
    """Runs spooled earlier for this store, sent now that it answers (best effort: what fails stays spooled)."""
    from sweeps.tracking.spool import pending, spool_root, sync

    root = spool_root(spool_dir)
    if not pending(root, uri):
        return
    try:
        for synced in sync(root, uri):
            log.warning("sent spooled run %s (%s) to %s", synced.run_id, synced.status, uri)
    except Exception as error:  # noqa: BLE001 - the spool keeps it; this command goes on
        log.warning("spooled runs for %s stay spooled: %s", uri, error)


class RunFailed(RuntimeError):
    """A run that had started failed; it is marked FAILED in MLflow. The message is the cause's."""

    def __init__(self, run_id: str, cause: BaseException):
        self.run_id, self.cause = run_id, cause
        super().__init__(f"{str(cause) or type(cause).__name__} (MLflow run {run_id} marked FAILED)")


def _killed(error: BaseException) -> bool:
    """Ctrl-C, SIGTERM (Lightning's SIGTERMException is a SystemExit), and a trial an Optuna pruner stopped (only
    possible where optuna is imported)."""
    optuna = sys.modules.get("optuna")
    return isinstance(error, KeyboardInterrupt | SystemExit) or optuna is not None and \
        isinstance(error, optuna.TrialPruned)


@contextmanager
def tracked_run(uri: str, experiment: str, run_name: str, tags: dict | None = None, parent_run_id: str | None = None,
                spool_dir: str | None = None):
    """A new MLflow run that ends FINISHED, or FAILED (KILLED on Ctrl-C, SIGTERM or pruning) if the block raises;
    an error inside it is raised again as RunFailed (naming the run), once: an enclosing run passes it on.

    A store out of reach at the start raises TrackingUnavailable before the block runs; one lost during the block
    spools the rest of the run, and the block's successful end then raises TrackingUnavailable naming the spool."""
    from mlflow.entities import RunStatus

    from sweeps.tracking.faults import TrackingUnavailable

    client, experiment_id_ = open_store(uri, experiment)
    send_spooled(client, uri, spool_dir)
    tags = tags or {}
    source = "xstilts sweep" if "xstilts.sweep" in tags else f"xstilts {tags.get('xstilts.command', 'run')}"
    all_tags = {"mlflow.source.git.commit": git_commit(), "mlflow.source.name": source,
                "mlflow.source.type": "LOCAL", "mlflow.runName": run_name, **tags}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    # a tracking server takes string tag values only (a sqlite store converts them itself)
    created = client.create_run(experiment_id_, run_name=run_name,
                                tags={key: str(value) for key, value in all_tags.items()})
    run = Run(client, uri, created.info.run_id, spool_dir)
    status = RunStatus.FAILED
    try:
        yield run
        status = RunStatus.FINISHED
    except BaseException as error:
        if _killed(error):
            status = RunStatus.KILLED
        if isinstance(error, Exception) and not isinstance(error, RunFailed) and not _killed(error):
            raise RunFailed(created.info.run_id, error) from error
        raise
    finally:
        run.end(RunStatus.to_string(status))
    if run.offline is not None:
        raise TrackingUnavailable(run.spooled_message(RunStatus.to_string(status)))
