"""The local spool: what a run could not send to its tracking store (parameters, metrics, tags, files, its checkpoint,
its final status) waits on this machine's disk until `xstilts sync`, or the next command that reaches the store,
sends it.

Layout: <spool>/<run id>/record.json (store URI, why it was spooled, final status, how many operations were sent),
ops.jsonl (one operation a line, in the order they happened), artifacts/<artifact path>/ (files as they would have
been uploaded). A run's folder is removed once everything in it reached the store.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
ENV_SPOOL = "XSTILTS_SPOOL"


def spool_root(explicit: str | None = None) -> Path:
    """--spool-dir, else $XSTILTS_SPOOL, else <xstilts cache>/spool."""
    from lightning_modules.encoders import cache_folder

    return cache_folder("spool", explicit, ENV_SPOOL)


class Spool:
    """One run's spool folder."""

    def __init__(self, root: Path, uri: str, run_id: str, reason: str):
        self.folder = Path(root) / run_id
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        record = self.folder / "record.json"
        if not record.exists():
            _write_json(record, {"uri": uri, "run_id": run_id, "reason": reason, "since": time.time(),
                                 "status": None, "sent": 0})
        (self.folder / "writer.pid").write_text(str(os.getpid()))

    def append(self, op: dict) -> None:
        with self._lock, (self.folder / "ops.jsonl").open("a") as out:
            out.write(json.dumps(op) + "\n")

    def add_artifacts(self, folder: Path, artifact_path: str | None) -> Path:
        destination = self.folder / "artifacts" / (artifact_path or "")
        shutil.copytree(folder, destination, dirs_exist_ok=True, copy_function=_link_or_copy)
        self.append({"op": "artifacts", "path": artifact_path})
        return destination

    def finish(self, status: str) -> None:
        record = self.folder / "record.json"
        with self._lock:
            _write_json(record, {**json.loads(record.read_text()), "status": status})


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)  # the same bytes without a second copy where both lie on one file system
    except OSError:
        shutil.copy2(source, destination)


def _write_json(path: Path, data: dict) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(data))
    os.replace(partial, path)


@dataclass
class Synced:
    run_id: str
    status: str | None
    operations: int


def pending(root: Path, uri: str | None = None) -> list[Path]:
    """Spooled runs (of store `uri`, or all), oldest first."""
    if not root.is_dir():
        return []
    folders = []
    for record in root.glob("*/record.json"):
        data = json.loads(record.read_text())
        if uri is None or data["uri"] == uri:
            folders.append((data["since"], record.parent))
    return [folder for _, folder in sorted(folders)]


def sync_folder(folder: Path, client=None) -> Synced:
    """Send one spooled run to its store; the folder is removed once all of it arrived. A failure part way leaves
    the rest spooled (what was sent is not sent again)."""
    import mlflow
    from mlflow.entities import Metric, Param

    from sweeps.tracking.datasets import as_entities

    record = json.loads((folder / "record.json").read_text())
    client = client or mlflow.MlflowClient(record["uri"])
    run_id, sent = record["run_id"], record["sent"]
    lines = (folder / "ops.jsonl").read_text().splitlines() if (folder / "ops.jsonl").exists() else []
    for number, line in enumerate(lines[sent:], start=sent):
        op = json.loads(line)
        if op["op"] == "params":
            params = [Param(k, v) for k, v in op["params"].items()]
            for start in range(0, len(params), 100):
                client.log_batch(run_id, params=params[start: start + 100])
        elif op["op"] == "metrics":
            metrics = [Metric(k, v, op["timestamp"], op["step"]) for k, v in op["metrics"].items()]
            for start in range(0, len(metrics), 1000):
                client.log_batch(run_id, metrics=metrics[start: start + 1000])
        elif op["op"] == "tags":
            for key, value in op["tags"].items():
                client.set_tag(run_id, key, value)
        elif op["op"] == "inputs":
            client.log_inputs(run_id, datasets=as_entities(op["inputs"]))
        elif op["op"] == "dict":
            client.log_dict(run_id, op["data"], op["file"])
        elif op["op"] == "artifacts":
            client.log_artifacts(run_id, str(folder / "artifacts" / (op["path"] or "")), op["path"])
        record["sent"] = number + 1
        _write_json(folder / "record.json", record)
    status = record["status"]
    if status is not None:
        client.set_tag(run_id, "xstilts.spooled", record["reason"])
        client.set_tag(run_id, "xstilts.synced_at", time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()))
        client.set_terminated(run_id, status)
        shutil.rmtree(folder)
    return Synced(run_id, status, len(lines))


def sync(root: Path, uri: str | None = None) -> list[Synced]:
    """Send every finished spooled run (of store `uri`, or all); a run still being written (no status) waits."""
    done = []
    for folder in pending(root, uri):
        record = json.loads((folder / "record.json").read_text())
        if record["status"] is None:
            if _writer_alive(folder):
                continue
            _write_json(folder / "record.json", {**record, "status": "FAILED",
                                                 "reason": record["reason"] + "; the process ended before the run"})
        done.append(sync_folder(folder))
    return done


def _writer_alive(folder: Path) -> bool:
    """Whether the process that spools into `folder` still runs (on this machine)."""
    try:
        pid = int((folder / "writer.pid").read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True
