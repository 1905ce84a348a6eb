"""Preflight: everything a run needs, checked before any MLflow run or Optuna study exists.

Tasks and languages are known; data files exist and every row parses (file, row and field named); the encoder or
checkpoint resolves (`models:/` and `runs:/` included); the tracking store and the Optuna storage answer within a few
seconds; folders that will be written are writable. A sweep checks all its phases at once (sweeps/engine/sweep.py).
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from datamodules.tasks import TaskSpec, get_task, load_registry
from lightning_modules.formats import get_spec
from sweeps.config import ConfigError, DataConfig, RunConfig
from sweeps.config.secrets import redact

CONNECT_SECONDS = 5
TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "file", "databricks")
STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql")


class PreflightError(ValueError):
    """An input that fails a preflight check; nothing has been created."""


@dataclass(frozen=True)
class Prepared:
    """What a run needs, built and checked before its MLflow run starts."""

    task: TaskSpec
    train_task: TaskSpec
    registry: dict
    train_examples: int | None = None  # known once the data is checked (None: not training, or streamed)


def check_files(config: RunConfig) -> None:
    """The local files a run certainly reads exist (a quick check: no file is read)."""
    from datamodules.slices import slices

    data_path = config.data.data_path()
    if data_path is None:
        return
    if not data_path.is_dir():
        raise PreflightError(f"data_dir {data_path} is not a folder")
    registry = load_registry(config.data.tasks_files)
    task = get_task(config.task, registry)
    for member in task.members:  # a mixture: each of its tasks
        check_files(config.evolve(task=member.name))
    train_task = registry[task.train_task] if task.train_task else task
    if train_task.has_split("train") and get_spec(task.format).trains:
        slices(train_task, "train", train_task.train_language, data_path)
    for lang in config.data.languages:
        for split in config.data.eval_splits:
            if task.has_split(split):
                slices(task, split, lang, data_path)


def check_run(config: RunConfig, training: bool = True) -> Prepared:
    """The task, its languages and settings, its data rows and the encoder of one run."""
    from lightning_modules.encoders import resolve

    registry = load_registry(config.data.tasks_files)
    task = get_task(config.task, registry)
    if config.data.seqeval:
        task = registry[task.name] = replace(task, seqeval=config.data.seqeval)
    for lang in config.data.languages:
        task.check_language(lang)
    if task.mixture is not None:
        _check_mixture_settings(config.data, task)
    _check_robustness(config.data, task, registry)
    data_path = config.data.data_path()
    if data_path is not None and not data_path.is_dir():
        raise PreflightError(f"--data-dir {data_path} is not a folder")
    if any(get_spec(t.format).windowed for t in (task, *task.members)) and config.data.doc_stride >= config.data.max_length // 2:
        raise ConfigError(f"--doc-stride {config.data.doc_stride} must be below half of --max-length "
                          f"{config.data.max_length}: the windows of a long context overlap by the stride")
    if training and config.data.streaming and config.train.max_steps < 1:
        raise ConfigError("--streaming needs --max-steps: a stream's length is not known in advance")
    if training and config.data.streaming and config.train.devices * config.train.num_nodes > 1:
        raise ConfigError(f"--streaming with --devices {config.train.devices} --num-nodes {config.train.num_nodes}: "
                          f"a stream cannot be shared out between the ranks of a distributed fit; valid: one device")
    resolve(config.encoder)
    train_task = registry[task.train_task] if task.train_task else task
    prepared = Prepared(task, train_task, registry)
    return replace(prepared, train_examples=check_data(config.data, prepared, training))


def _check_mixture_settings(data: DataConfig, task: TaskSpec) -> None:
    if data.streaming:
        raise ConfigError(f"--streaming: {task.name} is a mixture, whose rates need each task's size")
    if data.perturbations or data.adversarial:
        raise ConfigError(f"--perturb/--adversarial are for target tasks; {task.name} is a mixture (intermediate)")


def _check_robustness(data: DataConfig, task: TaskSpec, registry: dict) -> None:
    from datamodules.perturb import adversarial_tasks, check_perturbations

    check_perturbations(data.perturbations)
    adversarial_tasks(data.adversarial, task, registry)
    if data.perturb_dictionary and not Path(data.perturb_dictionary).is_file():
        raise PreflightError(f"--dictionary {data.perturb_dictionary} does not exist")


def check_data(data: DataConfig, prepared: Prepared, training: bool) -> int | None:
    """Every split the run reads, loaded and validated row by row (no tokenizing): files, columns, labels, types;
    returns the number of training examples."""
    from datamodules.mixture_data import task_datamodule
    from lightning_modules.formats import get_format

    module = task_datamodule(prepared.task, get_format(prepared.task.format), tokenizer=None,
                            train_task=prepared.train_task, data_dir=data.data_path(),
                            eval_languages=list(data.languages) or None, eval_splits=data.eval_splits,
                            streaming=data.streaming, max_train_examples=data.max_train_examples,
                            max_eval_examples=data.max_eval_examples)
    return module.check_data(training)


def local_encoder(name: str, uri: str) -> str:
    """An encoder name the encoders module resolves: a tracked checkpoint (`models:/`, `runs:/`) as its folder."""
    from sweeps.tracking.artifacts import is_tracked, local_checkpoint

    return str(local_checkpoint(name, uri)) if is_tracked(name) else name


def shown(uri: str) -> str:
    """A store's URI as the user wrote it: password redacted, without the database driver xstilts chose."""
    return redact(re.sub(r"^([a-z]+)\+[a-z0-9_]+://", r"\1://", uri))


def _scheme(uri: str) -> str:
    return uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in uri else ""


def check_tracking(uri: str) -> None:
    """The MLflow store answers (a server within the tracking timeout, a database within CONNECT_SECONDS) or its
    folder is writable (sqlite). A store that does not answer is TrackingUnavailable (exit status 3: retry later)."""
    scheme = _scheme(uri)
    if scheme not in TRACKING_SCHEMES:
        raise PreflightError(f"--tracking-uri {shown(uri)}: unsupported scheme {scheme or 'none'!r}; valid: "
                             f"{', '.join(TRACKING_SCHEMES)}")
    if scheme in ("http", "https"):
        _check_server(uri)
    elif scheme == "sqlite":
        writable(Path(uri.removeprefix("sqlite:///")).parent, "--tracking-uri")
    elif scheme != "file":
        _check_database(uri, "--tracking-uri", unavailable=True)


def check_artifacts(uri: str) -> None:
    """A command that writes runs to a database store knows where their artifacts go: MLflow would silently write
    each host's checkpoints to its own ./mlruns."""
    from sweeps.tracking.store import artifact_root

    if _scheme(uri) not in ("sqlite", "http", "https", "file") and artifact_root() is None:
        raise PreflightError(f"--tracking-uri {shown(uri)} has no place for checkpoints: MLflow would write each "
                             f"host's to its own ./mlruns; give --artifact-root (a folder every host mounts, or "
                             f"s3://…) or use an mlflow server with proxied artifacts (--tracking-uri http://…)")


def check_storage(url: str) -> None:
    """The Optuna storage (an RDB) answers within CONNECT_SECONDS."""
    scheme = _scheme(url)
    if scheme not in STORAGE_SCHEMES:
        raise PreflightError(f"--storage {shown(url)}: unsupported scheme {scheme or 'none'!r}; valid: "
                             f"{', '.join(STORAGE_SCHEMES)}")
    if scheme == "sqlite":
        writable(Path(url.removeprefix("sqlite:///")).parent, "--storage")
    else:
        _check_database(url, "--storage")


def _check_server(uri: str) -> None:
    import urllib.error
    import urllib.request

    from sweeps.tracking.faults import TrackingUnavailable, timeout_seconds

    seconds = timeout_seconds()
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=seconds):
            return
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingUnavailable(f"tracking store {shown(uri)} did not answer within {seconds:.0f} s ({reason}); "
                                  f"nothing was run") from None


def _check_database(url: str, option: str, unavailable: bool = False) -> None:
    """The database answers within CONNECT_SECONDS; else PreflightError, or TrackingUnavailable for the tracking
    store (`unavailable`)."""
    import sqlalchemy
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    from sweeps.tracking.faults import TrackingUnavailable

    try:
        engine = sqlalchemy.create_engine(url, connect_args=_timeout_args(url), poolclass=sqlalchemy.pool.NullPool)
        with engine.connect():
            pass
    except (ArgumentError, NoSuchModuleError) as error:
        raise PreflightError(f"{option} {shown(url)}: not a database URL ({error})") from None
    except SQLAlchemyError as error:
        cause = str(getattr(error, "orig", error)).strip().splitlines()
        reason = redact(cause[0] if cause else type(error).__name__)
        if unavailable:
            raise TrackingUnavailable(f"tracking store {shown(url)} did not answer within {CONNECT_SECONDS} s "
                                      f"({reason}); nothing was run") from None
        raise PreflightError(f"{option} {shown(url)}: cannot connect within {CONNECT_SECONDS} s ({reason})") from None


def _timeout_args(url: str) -> dict:
    scheme = _scheme(url)
    return {"connect_timeout": CONNECT_SECONDS} if scheme in ("postgresql", "mysql") else {}


def writable(folder: Path, what: str) -> None:
    """`folder` exists or can be made, and a file can be written in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".xstilts-check-"):
            pass
    except OSError as error:
        raise PreflightError(f"{what}: folder {folder} is not writable ({error.strerror})") from None


def check_cache() -> None:
    from lightning_modules.encoders import cache_dir

    writable(cache_dir(), "cache ($XSTILTS_CACHE)")
