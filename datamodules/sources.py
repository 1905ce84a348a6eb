"""Load one split of one task in one language through `datasets`, from the hub or from local files in the
hub's layout (`DATA_DIR/<dataset id>/<config>/<split>.{jsonl,json,parquet,csv}`), and map it to the canonical
fields of its format (its SPEC: lightning_modules/formats/spec.py). Bad data fails here, naming file, row and field.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from datamodules.pools import FILE_LAYOUTS, is_pool, load_pool
from datamodules.tasks import SourceSpec, TaskError, TaskSpec
from lightning_modules.formats import get_spec
from lightning_modules.formats.spec import FIELD_KINDS, check_value

LOCAL_EXTENSIONS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


class MissingData(TaskError):
    """A split or language that the data source does not have."""


@dataclass(frozen=True)
class Slice:
    """One dataset split that feeds a task split, with a human-readable description for error messages."""

    source: SourceSpec
    config: str | None
    split_name: str
    path: Path | None  # a local file, or None for the hub
    files: tuple[Path, ...] = ()  # every file a retrieval layout reads (datamodules/pools.py)

    def describe(self) -> str:
        where = str(self.path) if self.path else f"hub dataset {self.source.dataset}"
        return f"{where} (config {self.config}, split {self.split_name})"


def _fill(template, task: TaskSpec, lang: str):
    if isinstance(template, dict):
        return {key: _fill(value, task, lang) for key, value in template.items()}
    if isinstance(template, str):
        return template.format(lang=lang, name=task.language_name(lang))
    return template


def _local_file(data_dir: Path, dataset: str, config: str | None, split_name: str) -> Path:
    folder = data_dir / dataset / (config or "default")
    for ext in LOCAL_EXTENSIONS:
        candidate = folder / f"{split_name}{ext}"
        if candidate.exists():
            return candidate
    raise MissingData(f"no local file for {dataset} config {config} split {split_name}: expected "
                    f"{folder}/{split_name}{{{','.join(LOCAL_EXTENSIONS)}}}")


def slices(task: TaskSpec, split: str, lang: str, data_dir: Path | None) -> list[Slice]:
    """The dataset splits that make up `split` of `task` in `lang`."""
    task.check_language(lang)
    found = []
    for source in task.sources:
        config = _fill(source.config, task, lang)
        if split in source.data_files:
            found.append(Slice(source, config, split, Path(_fill(source.data_files[split], task, lang))))
            continue
        for split_name in source.splits.get(split, []):
            if task.layout in FILE_LAYOUTS:
                found.append(_layout_slice(task, source, config, split_name, lang, data_dir))
                continue
            if data_dir is None and source.local_only:
                raise TaskError(f"task {task.name!r} has no public source ({source.dataset}): pass --data-dir DIR "
                                f"holding {source.dataset}/{config or 'default'}/{split_name}.jsonl")
            path = _local_file(data_dir, source.dataset, config, split_name) if data_dir else None
            found.append(Slice(source, config, split_name, path))
    if not found:
        available = [s for s in ("train", "validation", "test") if task.has_split(s)]
        raise TaskError(f"task {task.name!r} has no {split!r} split; available: {', '.join(available) or 'none'}")
    return found


def _layout_slice(task: TaskSpec, source: SourceSpec, config, split_name: str, lang: str, data_dir) -> Slice:
    from datamodules.pools import local_files

    if data_dir is None:
        raise TaskError(f"task {task.name!r} reads local files only ({task.layout} layout): pass --data-dir DIR "
                        f"holding {source.dataset}/ (see datamodules/pools.py)")
    files = tuple(local_files(task, source.dataset, config, split_name, lang, Path(data_dir)))
    return Slice(source, config, split_name, files[0], files)


def _load_slice(piece: Slice, streaming: bool):
    import datasets
    from datasets.exceptions import DatasetGenerationError
    from pyarrow import ArrowInvalid

    if piece.path is not None:
        if not piece.path.exists():
            raise TaskError(f"data file {piece.path} does not exist")
        builder = LOCAL_EXTENSIONS.get(piece.path.suffix)
        if builder is None:
            raise TaskError(f"data file {piece.path}: unsupported extension; valid: {', '.join(LOCAL_EXTENSIONS)}")
        if streaming:
            return datasets.load_dataset(builder, data_files=str(piece.path), split="train", streaming=True)
        stat = piece.path.stat()  # a file changed on disk is loaded again
        try:
            return _load_once(builder, None, "train", None, str(piece.path), stat.st_mtime_ns, stat.st_size)
        except (DatasetGenerationError, ArrowInvalid) as error:
            raise TaskError(unreadable(piece.path, error)) from None
    try:
        if streaming:
            return datasets.load_dataset(piece.source.dataset, piece.config, split=piece.split_name,
                                         revision=piece.source.revision, streaming=True)
        return _load_once(piece.source.dataset, piece.config, piece.split_name, piece.source.revision)
    except ValueError as error:
        if "Unknown split" in str(error) or "Unknown config" in str(error) or "not found" in str(error):
            raise MissingData(f"{piece.describe()}: {error}") from error
        raise


def unreadable(path: Path, error: Exception) -> str:
    """Why a local data file cannot be read, naming its first bad line where it is JSON Lines."""
    if path.suffix in (".jsonl", ".json"):
        with path.open(encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as bad:
                    return f"{path} line {number}: not valid JSON ({bad.msg} at column {bad.colno})"
                if not isinstance(row, dict) and path.suffix == ".jsonl":
                    return f"{path} line {number}: a JSON object per line expected, found {type(row).__name__}"
    cause = error.__cause__ or error
    return f"{path}: cannot be read as {LOCAL_EXTENSIONS[path.suffix]} ({str(cause).strip().splitlines()[0]})"


@functools.lru_cache(maxsize=64)
def _load_once(path: str, config: str | None, split: str, revision: str | None, data_files: str | None = None,
               mtime_ns: int = 0, size: int = 0):
    """A dataset split, loaded once per process: one file or hub split often feeds many languages and splits
    (XNLI: 15 languages x 2 splits, each a filter of the same file), and each load_dataset call costs ~10 ms."""
    import datasets

    return datasets.load_dataset(path, config, data_files=data_files, split=split, revision=revision)


def _is_blank(path: Path) -> bool:
    if not path.exists() or path.suffix == ".parquet":
        return False
    with path.open("rb") as handle:
        return not handle.read(4096).strip() and path.stat().st_size <= 4096


def _matches(row_filter: dict, value) -> bool:
    if isinstance(row_filter, dict):
        return str(value).startswith(row_filter["prefix"])
    return str(value) == str(row_filter)


def _apply_filter(dataset, row_filter: dict, piece: Slice):
    for column, wanted in row_filter.items():
        _require_columns(dataset, [column], piece)
        dataset = dataset.filter(lambda batch, c=column, w=wanted: [_matches(w, v) for v in batch[c]], batched=True)
    return dataset


def _column_names(dataset) -> list[str]:
    if dataset.column_names is not None:
        return list(dataset.column_names)
    return list(next(iter(dataset)).keys())


def _require_columns(dataset, columns, piece: Slice) -> None:
    present = _column_names(dataset)
    missing = [c for c in columns if c not in present]
    if missing:
        raise TaskError(f"{piece.describe()}: missing column(s) {', '.join(missing)}; columns present: "
                        f"{', '.join(present)}")


def _top_columns(spec) -> list[str]:
    return [name.split(".")[0] for name in (spec if isinstance(spec, list) else [spec])]


def _get(row: dict, dotted: str):
    value = row
    for part in dotted.split("."):
        value = value[part]
    return value


class _Canonicalizer:
    """Maps a batch of dataset rows to the task's canonical fields; labels become integer ids."""

    def __init__(self, task: TaskSpec, piece: Slice, label_ids: dict[str, int] | None):
        self.task, self.piece, self.label_ids = task, piece, label_ids
        spec = get_spec(task.format)
        self.kinds, self.optional = {**spec.fields, **spec.optional_fields}, set(spec.optional_fields)
        self.columns = {f: task.columns[f] for f in self.kinds if f in task.columns}

    def value(self, row: dict, canonical: str, spec):
        if canonical == "choices" and isinstance(spec, list):
            return [str(_get(row, s)) for s in spec]
        if isinstance(spec, list):
            return " ".join(str(_get(row, s)).strip() for s in spec)
        return _get(row, spec)

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


def load_split(task: TaskSpec, split: str, lang: str, data_dir: Path | None = None,
               label_names: list[str] | None = None, streaming: bool = False):
    """Canonical rows of `split` of `task` in `lang` as one `datasets` Dataset (IterableDataset if streaming).

    label_names overrides the task's labels (tasks with `labels: from_data` get theirs from the train split).
    """
    import datasets

    if is_pool(task):  # retrieval over a pool of queries and candidates
        return load_pool(task, split, lang, data_dir)
    names = label_names if label_names is not None else task.labels
    label_ids = {name: i for i, name in enumerate(names)} if isinstance(names, list) else None
    parts = []
    for piece in slices(task, split, lang, data_dir):
        if piece.path is not None and _is_blank(piece.path):
            raise TaskError(f"{piece.describe()}: no rows for task {task.name!r} language {lang!r} (empty file)")
        raw = _load_slice(piece, streaming)
        raw = _apply_filter(raw, _fill(piece.source.filter, task, lang), piece)
        needed = [c for spec in task.columns.values() for c in _top_columns(spec)]
        _require_columns(raw, needed, piece)
        canonical = raw.map(_Canonicalizer(task, piece, label_ids), batched=True, with_indices=True,
                            remove_columns=_column_names(raw))
        if not streaming and len(canonical) == 0:
            error = MissingData if piece.source.filter else TaskError  # a language absent from a mixed config
            raise error(f"{piece.describe()}: no rows for task {task.name!r} language {lang!r}")
        parts.append(canonical)
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def collect_labels(task: TaskSpec, data_dir: Path | None) -> list[str]:
    """Sorted label set of the train split, for tasks declared with `labels: from_data`."""
    train = load_split(task, "train", task.train_language, data_dir)
    column = get_spec(task.format).label_field
    values = train[column]
    flat = {str(v) for seq in values for v in seq} if column == "tags" else {str(v) for v in values}
    return sorted(flat)
