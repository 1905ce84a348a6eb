"""Load one split of one task in one language through `datasets`, from the hub or from local files in the
hub's layout (`DATA_DIR/<dataset id>/<config>/<split>.{jsonl,json,parquet,csv}`), and map it to the canonical
fields of its format (its SPEC: lightning_modules/formats/spec.py). Bad data fails here, naming file, row and field.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from datamodules.pools import LAYOUT_VERSION, is_pool, load_pool
from datamodules.slices import (MissingData, Slice, apply_filter, column_names, fill, get_path, is_blank, load_slice,
                               require_columns, slice_key, slices, top_columns)
from datamodules.tasks import TaskError, TaskSpec
from lightning_modules.formats import get_spec
from lightning_modules.formats.spec import FIELD_KINDS, check_value

class _Canonicalizer:
    """Maps a batch of dataset rows to the task's canonical fields; labels become integer ids."""

    def __init__(self, task: TaskSpec, piece: Slice, label_ids: dict[str, int] | None):
        self.task, self.piece, self.label_ids = task, piece, label_ids
        spec = get_spec(task.format)
        self.kinds, self.optional = {**spec.fields, **spec.optional_fields}, set(spec.optional_fields)
        self.columns = {f: task.columns[f] for f in self.kinds if f in task.columns}

    def value(self, row: dict, canonical: str, spec):
        if canonical == "choices" and isinstance(spec, list):
            return [str(get_path(row, s)) for s in spec]
        if isinstance(spec, list):
            return " ".join(str(get_path(row, s)).strip() for s in spec)
        return get_path(row, spec)

    def label(self, value, index: int, column: str):
        if self.label_ids is None:
            return value
        if value in self.piece.source.skip_labels:
            return None
        key = str(value)
        if isinstance(value, (int,)) and not isinstance(value, bool) and 0 <= value < len(self.label_ids):
            return value
        if key in self.label_ids:
            return self.label_ids[key]
        valid = ", ".join(self.label_ids) + (f" or 0..{len(self.label_ids) - 1}" if isinstance(value, int) else "")
        raise TaskError(f"{self.piece.describe()} row {index}: column {column!r} has label {value!r}; valid: {valid}")

    def check_types(self, values: dict, index: int) -> None:
        for name, value in values.items():
            if not check_value(self.kinds[name], value) and not (value is None and name in self.optional):
                raise TaskError(f"{self.piece.describe()} row {index}: column {self.columns[name]!r} holds "
                                f"{type(value).__name__} {str(value)[:40]!r}; expected {FIELD_KINDS[self.kinds[name]]}")

    def tags(self, values, index: int, column: str):
        return [self.label(v, index, column) for v in values]

    def __call__(self, batch: dict, indices: list[int]) -> dict:
        out = {name: [] for name in self.columns}
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        for row, index in zip(rows, indices):
            values = {name: self.value(row, name, spec) for name, spec in self.columns.items()}
            self.check_types(values, index)
            if "label" in values:
                values["label"] = self.label(values["label"], index, str(self.columns["label"]))
            if "tags" in values:
                values["tags"] = self.tags(values["tags"], index, str(self.columns["tags"]))
            if values.get("label", 0) is None:
                continue
            for name, value in values.items():
                out[name].append(value)
        return out


# load_split's datasets in this process, by what decides their rows (split_key: the files' size and modification time
# included): a run's preflight, its setup and a sweep worker's later trials read a split once (the rows stay on disk)
_LOADED: dict[str, object] = {}
MAX_LOADED = 1024


def load_split(task: TaskSpec, split: str, lang: str, data_dir: Path | None = None,
               label_names: list[str] | None = None, streaming: bool = False):
    """Canonical rows of `split` of `task` in `lang` as one `datasets` Dataset (IterableDataset if streaming).

    label_names overrides the task's labels (tasks with `labels: from_data` get theirs from the train split).
    """
    import datasets

    if is_pool(task):  # retrieval over a pool of queries and candidates
        return load_pool(task, split, lang, data_dir)
    key = None if streaming else json.dumps(split_key(task, split, lang, data_dir, label_names), sort_keys=True,
                                            default=str)
    if key in _LOADED:
        return _LOADED[key]
    names = label_names if label_names is not None else task.labels
    label_ids = {name: i for i, name in enumerate(names)} if isinstance(names, list) else None
    parts = []
    for piece in slices(task, split, lang, data_dir):
        if piece.path is not None and is_blank(piece.path):
            raise TaskError(f"{piece.describe()}: no rows for task {task.name!r} language {lang!r} (empty file)")
        raw = load_slice(piece, streaming)
        raw = apply_filter(raw, fill(piece.source.filter, task, lang), piece)
        needed = [c for spec in task.columns.values() for c in top_columns(spec)]
        require_columns(raw, needed, piece)
        canonical = raw.map(_Canonicalizer(task, piece, label_ids), batched=True, with_indices=True,
                            remove_columns=column_names(raw))
        if not streaming and len(canonical) == 0:
            error = MissingData if piece.source.filter else TaskError  # a language absent from a mixed config
            raise error(f"{piece.describe()}: no rows for task {task.name!r} language {lang!r}")
        parts.append(canonical)
    rows = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    if key is not None:
        if len(_LOADED) >= MAX_LOADED:
            del _LOADED[next(iter(_LOADED))]
        _LOADED[key] = rows
    return rows


def split_key(task: TaskSpec, split: str, lang: str, data_dir: Path | None, label_names=None) -> dict:
    """What decides the canonical rows `load_split` returns: the task's declaration, the labels, and the content
    of every piece read (files with size and modification time, or hub ids); an XQuAD-R pool reads every language."""
    languages = task.languages if task.layout == "xquad_r" else [lang]
    pieces = [slice_key(piece) for other in languages for piece in _present(task, split, other, data_dir)]
    return {"task": asdict(task), "split": split, "lang": lang, "labels": label_names, "pieces": pieces,
            "layout_version": LAYOUT_VERSION}


def data_digest(key: dict) -> str:
    """A short fingerprint of a data key (split_key plus the row limit: what decides the rows read, not the rows
    themselves): the first 10 hex digits of the SHA-256 of its JSON with sorted keys. Logged as an MLflow dataset's
    digest; it changes when a file, the task's declaration, the labels or the limit change."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _present(task: TaskSpec, split: str, lang: str, data_dir: Path | None) -> list[Slice]:
    try:
        return slices(task, split, lang, data_dir)
    except MissingData:
        return []


def collect_labels(task: TaskSpec, data_dir: Path | None) -> list[str]:
    """Sorted label set of the train split, for tasks declared with `labels: from_data`."""
    train = load_split(task, "train", task.train_language, data_dir)
    column = get_spec(task.format).label_field
    values = train[column]
    flat = {str(v) for seq in values for v in seq} if column == "tags" else {str(v) for v in values}
    return sorted(flat)
