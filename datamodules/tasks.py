"""The task registry: every task declared once, as data (tasks.yaml), validated into TaskSpec objects.

Users add tasks without code: a YAML file of the same shape passed with `--tasks-file` or listed in the
XSTILTS_TASKS environment variable (paths separated by ':').
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import yaml
from pydantic import ValidationError

from datamodules.mixtures import Mixture

from lightning_modules.formats import MIXTURE, UnknownFormat, get_spec

BUILTIN_TASKS = Path(__file__).with_name("tasks.yaml")
SPLITS = ("train", "validation", "test")
KINDS = ("intermediate", "target")
MIXTURE_KEYS = ("mixture", "kind", "description", "domain", "tags")  # the options of a mixture's entry

# Retrieval layouts (datamodules/pools.py): "pairs" reads aligned (source, target) rows (the format's own fields);
# the others build a pool of queries and candidates, from their own files (bucc2018, mewslix: local only) or from
# SQuAD-format rows (xquad_r). Each other layout maps to its (required, optional) canonical fields.
RETRIEVAL_LAYOUTS = {"pairs": None, "bucc2018": ((), ()), "mewslix": ((), ()),
                     "xquad_r": (("id", "context", "question", "answers"), ("sentence_breaks",))}


class TaskError(ValueError):
    """A task declaration or task data that cannot be used; the message says what is wrong and what is valid."""


@dataclass(frozen=True)
class SourceSpec:
    """Where one slice of a task's data lives: a hub dataset (or the same layout on local disk)."""

    dataset: str
    config: str | None = None
    splits: dict[str, list[str]] = field(default_factory=dict)
    revision: str | None = None
    filter: dict = field(default_factory=dict)
    skip_labels: list = field(default_factory=list)
    local_only: bool = False
    data_files: dict[str, str] = field(default_factory=dict)
    build: str | None = None  # local_only: the command that writes this dataset (shown when it is missing)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str
    format: str
    sources: list[SourceSpec]
    columns: dict
    languages: list[str]
    metric: str
    description: str = ""
    labels: list[str] | str | None = None
    language_names: dict[str, str] = field(default_factory=dict)
    train_task: str | None = None
    train_language: str = "en"
    allow_no_answer: bool = False
    answer_normalization: str = "squad"
    seqeval: str = "0.0"  # tagging chunk F1: seqeval 0.0.x as XTREME's published numbers, or "1.x"
    domain: str | None = None
    tags: dict = field(default_factory=dict)
    layout: str = "pairs"  # retrieval only: see RETRIEVAL_LAYOUTS
    calibration_split: str | None = None  # retrieval F1: the labelled split whose best threshold the others use
    benchmarks: dict = field(default_factory=dict)  # benchmark name -> its fixed language list ("all": languages)
    variant_of: str | None = None  # the same benchmark task read from other data (bucc2018_official: bucc2018)
    mixture: Mixture | None = None  # a mixture of tasks (datamodules/mixtures.py), format "mixture"
    members: tuple = ()  # a mixture's tasks (TaskSpec), resolved when the registry is loaded

    def benchmark_languages(self, benchmark: str) -> list[str]:
        """The task's fixed language list in `benchmark` ([] if it is not part of it)."""
        langs = self.benchmarks.get(benchmark, [])
        return list(self.languages) if langs == "all" else list(langs)

    def language_name(self, lang: str) -> str:
        return self.language_names.get(lang, lang)

    def has_split(self, split: str) -> bool:
        return any(split in source.splits or split in source.data_files for source in self.sources)

    @property
    def num_labels(self) -> int | None:
        return len(self.labels) if isinstance(self.labels, list) else None

    def check_language(self, lang: str) -> None:
        if lang not in self.languages:
            raise TaskError(f"task {self.name!r} has no language {lang!r}; valid: {', '.join(self.languages)}")


def _fail(where: str, message: str):
    raise TaskError(f"{where}: {message}")


def _check_keys(where: str, given: dict, allowed) -> None:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        _fail(where, f"unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(allowed))}")


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _parse_source(where: str, raw: dict, folder: Path | None) -> SourceSpec:
    if not isinstance(raw, dict) or "dataset" not in raw:
        _fail(where, "each source needs at least `dataset` (a hub id or a local name)")
    _check_keys(where, raw, [f.name for f in fields(SourceSpec)])
    splits = {split: _as_list(names) for split, names in raw.get("splits", {}).items()}
    if folder is not None:  # relative data files are relative to the tasks file that names them
        raw = {**raw, "data_files": {split: str(folder / path) for split, path in raw.get("data_files", {}).items()}}
    for split in list(splits) + list(raw.get("data_files", {})):
        if split not in SPLITS:
            _fail(where, f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    return SourceSpec(**{**raw, "splits": splits})


def parse_task(name: str, raw: dict, origin: str = "") -> TaskSpec:
    where = f"task {name!r}" + (f" in {origin}" if origin else "")
    if not isinstance(raw, dict):
        _fail(where, "a task is a mapping of options")
    if "mixture" in raw:
        return _parse_mixture(name, raw, where)
    _check_keys(where, raw, [f.name for f in fields(TaskSpec) if f.name != "name"])
    for key in ("kind", "format", "sources", "columns", "languages", "metric"):
        if key not in raw:
            _fail(where, f"missing option `{key}`")
    fmt, kind, metric = raw["format"], raw["kind"], raw["metric"]
    try:
        format_spec = get_spec(fmt)
    except UnknownFormat as error:
        _fail(where, str(error))
    if fmt == MIXTURE:
        _fail(where, "a mixture is declared with `mixture: {tasks: [...], sampling: ...}`, not `format: mixture`")
    if kind not in KINDS:
        _fail(where, f"unknown kind {kind!r}; valid: {', '.join(KINDS)}")
    if metric not in format_spec.metrics:
        _fail(where, f"metric {metric!r} does not fit format {fmt}; valid: {', '.join(format_spec.metrics)}")
    required, optional = _fields(where, fmt, raw)
    missing = [f for f in required if f not in raw["columns"]]
    if missing:
        _fail(where, f"columns must map {', '.join(missing)} (format {fmt} reads {', '.join(required)})")
    allowed_fields = required + optional
    _check_keys(f"{where} columns", raw["columns"], allowed_fields)
    if format_spec.needs_labels and not raw.get("labels"):
        _fail(where, f"format {fmt} needs `labels` (a list, or `from_data` to collect them from the train split)")
    labels = raw.get("labels")
    if labels is not None and labels != "from_data" and not isinstance(labels, list):
        _fail(where, "`labels` is a list of label names or `from_data`")
    languages = _as_list(raw["languages"])
    if not languages:
        _fail(where, "`languages` is empty")
    folder = Path(origin).parent if origin else None
    sources = [_parse_source(f"{where} source {i}", s, folder) for i, s in enumerate(_as_list(raw["sources"]))]
    if "seqeval" in raw:  # YAML reads a bare 0.0 as a number
        raw = {**raw, "seqeval": str(raw["seqeval"])}
    spec = TaskSpec(name=name, **{**raw, "sources": sources, "languages": languages,
                                  "labels": [str(x) for x in labels] if isinstance(labels, list) else labels})
    if format_spec.trains and spec.train_task is None and spec.train_language not in spec.languages:
        _fail(where, f"train_language {spec.train_language!r} is not among its languages")
    _check_retrieval_options(where, spec)
    _check_benchmarks(where, spec)
    if spec.answer_normalization not in ("squad", "mlqa"):
        _fail(where, f"answer_normalization {spec.answer_normalization!r}; valid: squad, mlqa")
    if spec.seqeval not in ("0.0", "1.x"):
        _fail(where, f"seqeval {spec.seqeval!r}; valid: 0.0 (XTREME's published numbers), 1.x")
    return spec


def _fields(where: str, fmt: str, raw: dict) -> tuple[tuple, tuple]:
    """(required, optional) canonical fields of a task's `columns`."""
    layout = raw.get("layout", "pairs")
    if layout != "pairs" and fmt != "retrieval":
        _fail(where, f"`layout` is for retrieval tasks; format {fmt} has none")
    if layout not in RETRIEVAL_LAYOUTS:
        _fail(where, f"unknown layout {layout!r}; valid: {', '.join(RETRIEVAL_LAYOUTS)}")
    if fmt == "retrieval" and RETRIEVAL_LAYOUTS[layout] is not None:
        return RETRIEVAL_LAYOUTS[layout]
    spec = get_spec(fmt)
    return tuple(spec.fields), tuple(spec.optional_fields)


def _check_retrieval_options(where: str, spec: TaskSpec) -> None:
    split = spec.calibration_split
    if split is None:
        return
    if spec.format != "retrieval" or spec.metric != "f1":
        _fail(where, "`calibration_split` is for retrieval tasks scored by f1 (bitext mining)")
    if split not in SPLITS or not spec.has_split(split):
        _fail(where, f"calibration_split {split!r} is not one of its splits")


def _check_benchmarks(where: str, spec: TaskSpec) -> None:
    if not isinstance(spec.benchmarks, dict):
        _fail(where, "`benchmarks` maps a benchmark name to its language list (or `all`)")
    for name, langs in spec.benchmarks.items():
        if langs == "all":
            continue
        if not isinstance(langs, list) or not langs:
            _fail(where, f"benchmark {name!r}: give a list of languages or `all`")
        unknown = [lang for lang in langs if lang not in spec.languages]
        if unknown:
            _fail(where, f"benchmark {name!r}: language(s) {', '.join(unknown)} not among the task's languages")


SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's, where PyYAML has it: 5x faster


def _read_yaml(path: Path) -> dict:
    if not path.exists():
        raise TaskError(f"tasks file {path} does not exist")
    try:
        data = yaml.load(path.read_text(), Loader=SAFE_LOADER) or {}
    except yaml.YAMLError as err:
        raise TaskError(f"tasks file {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise TaskError(f"tasks file {path} must map task names to task declarations")
    return data


def per_language(name: str, raw) -> list[tuple[str, dict]]:
    """The tasks a declaration makes: itself, or with `one_task_per_language: true` one task per language,
    `<name>_<lang>`, with that language only, trained and selected in it (translated intermediate data)."""
    if not isinstance(raw, dict) or not raw.get("one_task_per_language"):
        return [(name, raw)]
    rest = {key: value for key, value in raw.items() if key != "one_task_per_language"}
    return [(f"{name}_{lang}", {**rest, "languages": [lang], "train_language": lang})
            for lang in _as_list(raw.get("languages", []))]


def load_registry(extra_files=()) -> dict[str, TaskSpec]:
    """Built-in tasks plus those of `extra_files` and $XSTILTS_TASKS; a later file may override a task."""
    env_files = [p for p in os.environ.get("XSTILTS_TASKS", "").split(":") if p]
    registry = {}
    for path in [BUILTIN_TASKS, *map(Path, env_files), *map(Path, extra_files)]:
        for declared, declaration in _read_yaml(path).items():
            for name, raw in per_language(declared, declaration):
                registry[name] = parse_task(name, raw, origin=str(path))
    for spec in registry.values():
        _check_train_task(spec, registry)
        _check_variant(spec, registry)
    return {name: _with_members(spec, registry) if spec.mixture else spec for name, spec in registry.items()}


def _check_variant(spec: TaskSpec, registry: dict[str, TaskSpec]) -> None:
    if spec.variant_of is None:
        return
    base = registry.get(spec.variant_of)
    if base is None:
        raise TaskError(f"task {spec.name!r}: variant_of {spec.variant_of!r} is not a registered task")
    if base.format != spec.format or base.metric != spec.metric or base.variant_of is not None:
        raise TaskError(f"task {spec.name!r}: variant_of {base.name!r} must name a task of the same format and "
                        f"metric that is not itself a variant")


def _check_train_task(spec: TaskSpec, registry: dict[str, TaskSpec]) -> None:
    if spec.train_task is None:
        return
    trainer = registry.get(spec.train_task)
    if trainer is None:
        raise TaskError(f"task {spec.name!r}: train_task {spec.train_task!r} is not a registered task")
    if trainer.format != spec.format or trainer.labels != spec.labels:
        raise TaskError(f"task {spec.name!r}: train_task {trainer.name!r} must have the same format and labels")


def _parse_mixture(name: str, raw: dict, where: str) -> TaskSpec:
    """A tasks-file entry with `mixture:` as a TaskSpec of format "mixture" (its members resolved later)."""
    unknown = sorted(set(raw) - set(MIXTURE_KEYS))
    if unknown:
        raise TaskError(f"{where}: unknown option(s) {', '.join(unknown)} for a mixture; valid: "
                        f"{', '.join(MIXTURE_KEYS)}")
    if raw.get("kind", "intermediate") != "intermediate":
        raise TaskError(f"{where}: a mixture is an intermediate task (kind: intermediate), not {raw['kind']!r}")
    if not isinstance(raw["mixture"], dict):
        raise TaskError(f"{where}: `mixture` is a mapping (tasks, sampling, temperature, max_examples_per_task)")
    try:
        mixture = Mixture.model_validate(raw["mixture"])
    except ValidationError as error:
        problem = error.errors()[0]
        loc = ".".join(map(str, ("mixture", *problem["loc"])))
        shown = "" if problem["type"] == "missing" else f" {problem['input']!r}"
        raise TaskError(f"{where}: {loc}{shown}: {problem['msg'].removeprefix('Value error, ')}") from None
    return TaskSpec(name=name, kind="intermediate", format=MIXTURE, sources=[], columns={}, languages=[],
                    metric="score", description=raw.get("description", ""), domain=raw.get("domain"),
                    tags=raw.get("tags") or {}, mixture=mixture)


def _with_members(spec: TaskSpec, registry: dict[str, TaskSpec]) -> TaskSpec:
    """The mixture with its tasks resolved and checked: registered, trainable on their own data, higher-is-better
    metric, one training language (the mixture's)."""
    where = f"mixture {spec.name!r}"
    members = []
    for name in spec.mixture.tasks:
        member = registry.get(name)
        if member is None:
            raise TaskError(f"{where}: unknown task {name!r}; registered: {', '.join(sorted(registry))}")
        format_spec = get_spec(member.format)
        if member.mixture is not None:
            raise TaskError(f"{where}: task {name!r} is itself a mixture; list its tasks instead")
        if not format_spec.trains:
            raise TaskError(f"{where}: task {name!r} ({member.format}) is evaluation only: nothing to train")
        if member.train_task:
            raise TaskError(f"{where}: task {name!r} trains on {member.train_task!r}: list {member.train_task!r}")
        if format_spec.lower_is_better(member.metric):
            raise TaskError(f"{where}: task {name!r} is scored by {member.metric} (lower is better); a mixture's "
                            f"score is the mean of higher-is-better metrics")
        members.append(member)
    languages = sorted({m.train_language for m in members})
    if len(languages) > 1:
        raise TaskError(f"{where}: its tasks train in different languages ({', '.join(languages)}); a mixture "
                        f"has one training language")
    return replace(spec, members=tuple(members), languages=languages, train_language=languages[0])


def get_task(name: str, registry: dict[str, TaskSpec]) -> TaskSpec:
    if name not in registry:
        raise TaskError(f"unknown task {name!r}; registered: {', '.join(sorted(registry))}")
    return registry[name]
