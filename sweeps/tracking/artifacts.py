"""Checkpoints by name: a folder, `runs:/<run id>/<path>`, `models:/<name>@<alias>` or `models:/<name>/<version>`.
A tracked checkpoint in a local store (sqlite + artifacts on this disk) is used where it lies; one on a server is
downloaded once into the cache ($XSTILTS_CACHE/checkpoints/<run id>/), atomically: workers sharing the cache never
see half a download."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


class CheckpointError(ValueError):
    """A checkpoint name that does not lead to a checkpoint."""


def is_tracked(name: str) -> bool:
    return name.startswith(("runs:/", "models:/"))


def _run_and_path(client, name: str) -> tuple[str, str]:
    if name.startswith("runs:/"):
        run_id, _, path = name.removeprefix("runs:/").partition("/")
        client.get_run(run_id)
        return run_id, path or "checkpoint"
    model = name.removeprefix("models:/")
    if "@" in model:
        registered, alias = model.split("@", 1)
        version = client.get_model_version_by_alias(registered, alias)
    else:
        registered, _, number = model.rpartition("/")
        version = client.get_model_version(registered, number)
    return version.run_id, "checkpoint"  # a champion's run (its version may hold a copy: a pyfunc model)


def local_artifacts(artifact_uri: str) -> Path | None:
    """The folder of a run's artifacts when they lie on this machine's disk (`file:` URIs); None for a server's."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    parsed = urlparse(artifact_uri)
    return Path(url2pathname(parsed.path)) if parsed.scheme == "file" else None


def local_checkpoint(name: str, uri: str) -> Path:
    """A local folder holding the checkpoint `name` (a tracked one is downloaded once)."""
    if not is_tracked(name):
        path = Path(name).expanduser()
        if not path.exists():
            raise CheckpointError(f"checkpoint {name} does not exist")
        return path
    import mlflow
    from mlflow.exceptions import MlflowException

    from lightning_modules.encoders import cache_dir

    client = mlflow.MlflowClient(uri)
    try:
        run_id, path = _run_and_path(client, name)
        on_disk = local_artifacts(client.get_run(run_id).info.artifact_uri)
        if on_disk is not None and (on_disk / path).exists():  # a local store's: used where it is, not copied
            return on_disk / path
        folder = cache_dir() / "checkpoints" / run_id
        if not (folder / path).exists():
            staging = folder.with_name(f"{run_id}.partial-{os.getpid()}")
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            client.download_artifacts(run_id, path, str(staging))
            try:
                staging.rename(folder)
            except OSError:  # another process finished the same download first
                shutil.rmtree(staging, ignore_errors=True)
    except MlflowException as error:
        raise CheckpointError(f"{name}: {error.message.splitlines()[0]}") from None
    if not (folder / path).exists():
        raise CheckpointError(f"{name}: run {run_id} has no artifact {path!r}")
    return folder / path
