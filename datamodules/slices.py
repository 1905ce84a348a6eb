"""Where a task's data comes from and how one piece of it is read: the dataset splits (hub or local files in the
hub's layout, `DATA_DIR/<dataset id>/<config>/<split>.{jsonl,json,parquet,csv}`) that make up a split of a task in
a language, the files a retrieval layout reads, and the loading, filtering and column checks shared by the row loader
(sources.py) and the retrieval pools (pools.py). Bad files fail here, naming the file and the line.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from datamodules.tasks import SourceSpec, TaskError, TaskSpec

FILE_LAYOUTS = ("bucc2018", "mewslix")  # retrieval layouts that read files of their own (datamodules/pools.py)
MEWSLIX_CANDIDATES = "candidate_set_entities.jsonl"
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


def fill(template, task: TaskSpec, lang: str):
    if isinstance(template, dict):
        return {key: fill(value, task, lang) for key, value in template.items()}
    if isinstance(template, str):
        return template.format(lang=lang, name=task.language_name(lang))
    return template


def split_slice(split_name: str) -> tuple[str, str]:
    """("train", "[:99%]") for "train[:99%]": a split name may carry the hub's slice syntax (a validation split
    held out of a corpus that has only `train`); a local file is named by the split without it."""
    base, bracket, rest = split_name.partition("[")
    return base, bracket + rest


def local_file(data_dir: Path, dataset: str, config: str | None, split_name: str) -> Path:
    split_name, _ = split_slice(split_name)
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
        config = fill(source.config, task, lang)
        if split in source.data_files:
            found.append(Slice(source, config, split, Path(fill(source.data_files[split], task, lang))))
            continue
        for split_name in source.splits.get(split, []):
            if task.layout in FILE_LAYOUTS:
                found.append(layout_slice(task, source, config, split_name, lang, data_dir))
                continue
            if source.local_only:
                found.append(Slice(source, config, split_name, local_only_file(task, source, config, split_name,
                                                                               data_dir)))
                continue
            path = local_file(data_dir, source.dataset, config, split_name) if data_dir else None
            found.append(Slice(source, config, split_name, path))
    if not found:
        available = [s for s in ("train", "validation", "test") if task.has_split(s)]
        raise TaskError(f"task {task.name!r} has no {split!r} split; available: {', '.join(available) or 'none'}")
    return found


def local_data_dir() -> Path:
    """Where local-only datasets are also looked for, after --data-dir: the xstilts cache's data/ folder (builders
    such as `python -m datamodules.fixtures.catalogs` write there)."""
    from lightning_modules.encoders import cache_dir

    return cache_dir() / "data"


def local_roots(data_dir: Path | None) -> list[Path]:
    return [*([Path(data_dir)] if data_dir else []), local_data_dir()]


def local_only_file(task: TaskSpec, source: SourceSpec, config, split_name: str, data_dir: Path | None) -> Path:
    """A local-only source's file, from --data-dir, else from the cache's data folder. A dataset found in neither
    is a TaskError; a dataset found without this config or split (a language not built) is MissingData."""
    roots = local_roots(data_dir)
    for root in roots:
        try:
            return local_file(root, source.dataset, config, split_name)
        except MissingData:
            continue
    expected = f"{source.dataset}/{config or 'default'}/{split_name}.jsonl"
    build = f", or build it: {source.build}" if source.build else ""
    if not any((root / source.dataset).is_dir() for root in roots):
        raise TaskError(f"task {task.name!r} has no public source ({source.dataset}): pass --data-dir DIR holding "
                        f"{expected} (or put it under {local_data_dir()}{build})")
    raise MissingData(f"task {task.name!r}: no {expected} under {' or '.join(map(str, roots))}{build}")


def provenance_files(tasks, data_dir: Path | None) -> dict[str, Path]:
    """dataset -> the provenance.json a builder wrote beside a local-only dataset that `tasks` read."""
    found = {}
    for task in tasks:
        for source in task.sources:
            for root in local_roots(data_dir) if source.local_only else []:
                path = root / source.dataset / "provenance.json"
                if path.is_file():
                    found.setdefault(source.dataset, path)
    return found


def layout_slice(task: TaskSpec, source: SourceSpec, config, split_name: str, lang: str, data_dir) -> Slice:
    if data_dir is None:
        raise TaskError(f"task {task.name!r} reads local files only ({task.layout} layout): pass --data-dir DIR "
                        f"holding {source.dataset}/ (see datamodules/pools.py)")
    files = tuple(local_files(task, source.dataset, config, split_name, lang, Path(data_dir)))
    return Slice(source, config, split_name, files[0], files)


def load_slice(piece: Slice, streaming: bool):
    import datasets
    from datasets.exceptions import DatasetGenerationError
    from pyarrow import ArrowInvalid

    if piece.path is not None:
        if not piece.path.exists():
            raise TaskError(f"data file {piece.path} does not exist")
        builder = LOCAL_EXTENSIONS.get(piece.path.suffix)
        if builder is None:
            raise TaskError(f"data file {piece.path}: unsupported extension; valid: {', '.join(LOCAL_EXTENSIONS)}")
        if streaming:  # the whole file: a slice is for training, every row is checked
            return datasets.load_dataset(builder, data_files=str(piece.path), split="train", streaming=True)
        stat = piece.path.stat()  # a file changed on disk is loaded again
        try:
            return load_once(builder, None, "train" + split_slice(piece.split_name)[1], None, str(piece.path),
                             stat.st_mtime_ns, stat.st_size)
        except (DatasetGenerationError, ArrowInvalid) as error:
            raise TaskError(unreadable(piece.path, error)) from None
    try:
        if streaming:
            return datasets.load_dataset(piece.source.dataset, piece.config, split=split_slice(piece.split_name)[0],
                                         revision=piece.source.revision, streaming=True)
        return load_once(piece.source.dataset, piece.config, piece.split_name, piece.source.revision)
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
def load_once(path: str, config: str | None, split: str, revision: str | None, data_files: str | None = None,
               mtime_ns: int = 0, size: int = 0):
    """A dataset split, loaded once per process: one file or hub split often feeds many languages and splits
    (XNLI: 15 languages x 2 splits, each a filter of the same file), and each load_dataset call costs ~10 ms."""
    import datasets

    return datasets.load_dataset(path, config, data_files=data_files, split=split, revision=revision)


def is_blank(path: Path) -> bool:
    if not path.exists() or path.suffix == ".parquet":
        return False
    with path.open("rb") as handle:
        return not handle.read(4096).strip() and path.stat().st_size <= 4096


def matches(row_filter: dict, value) -> bool:
    if isinstance(row_filter, dict):
        return str(value).startswith(row_filter["prefix"])
    return str(value) == str(row_filter)


def apply_filter(dataset, row_filter: dict, piece: Slice):
    for column, wanted in row_filter.items():
        require_columns(dataset, [column], piece)
        dataset = dataset.filter(lambda batch, c=column, w=wanted: [matches(w, v) for v in batch[c]], batched=True)
    return dataset


def column_names(dataset) -> list[str]:
    if dataset.column_names is not None:
        return list(dataset.column_names)
    return list(next(iter(dataset)).keys())


def require_columns(dataset, columns, piece: Slice) -> None:
    present = column_names(dataset)
    missing = [c for c in columns if c not in present]
    if missing:
        raise TaskError(f"{piece.describe()}: missing column(s) {', '.join(missing)}; columns present: "
                        f"{', '.join(present)}")


def top_columns(spec) -> list[str]:
    return [name.split(".")[0] for name in (spec if isinstance(spec, list) else [spec])]


def get_path(row: dict, dotted: str):
    value = row
    for part in dotted.split("."):
        value = value[part]
    return value


def local_files(task: TaskSpec, dataset: str, config: str | None, split_name: str, lang: str,
                data_dir: Path) -> list[Path]:
    """The files a file layout reads for one split; MissingData names the first one absent."""
    root = data_dir / dataset
    if task.layout == "bucc2018":
        config = config or f"{lang}-en"
        prefix = root / config / f"{config}.{split_name}"
        paths = [prefix.with_name(f"{prefix.name}.{ext}") for ext in (lang, "en", "gold")]
    elif task.layout == "mewslix":
        folder = root / config if config else root
        paths = [folder / f"{split_name}.jsonl", folder / MEWSLIX_CANDIDATES]
    else:
        raise TaskError(f"task {task.name!r}: layout {task.layout!r} reads no files of its own")
    for path in paths:
        if not path.exists():
            raise MissingData(f"task {task.name!r} ({task.layout} layout): no file {path}")
    return paths


def slice_key(piece: Slice) -> list:
    """What decides a piece's content: its files with their size and modification time, or its hub id."""
    files = piece.files or ((piece.path,) if piece.path else ())
    if files:
        return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    return [piece.source.dataset, piece.config, piece.split_name, piece.source.revision]
