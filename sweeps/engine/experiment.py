"""Experiment files (YAML under sweeps/): the encoder, the phases in order, a search space per phase, the budget.

    name: demo
    encoder: tiny-xlmr                              # or a list: model size as a sweep dimension
    data: {data_dir: fixtures, max_length: 64}      # any DataConfig field
                                                    # (perturbations: [typos, code_switch], adversarial:
                                                    # [anli_plus]: the targets' final evaluation only)
    seeds: [0, 1, 2]                                # every configuration once per seed (or `seed: 0`)
    budget: {trials: 3, timeout_minutes: 20}        # trials per study; the time limit covers the whole sweep
    phases:
      mlm: mlm_text                                 # optional continued masked-LM phase
      intermediate: [mnli, [squad_v1, mnli]]        # a task, or a sequence of tasks run one after another,
                                                    # or {permutations: [squad_v1, mnli]}: every order
      baseline: true                                # also train every target with no intermediate phase
      targets: [pawsx, panx]
    train:                                          # per phase kind; a value is fixed, a list is a choice,
      intermediate: {lr: {low: 1e-4, high: 3e-3, log: true}, epochs: [1, 2], batch_size: 16}
      target: {lr: 1e-3, epochs: 2}                 # and {low, high[, log]} a range
      tasks: {pawsx: {epochs: 5}, xquad: {max_length: 384}}   # per-task overrides (training and input length)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import yaml

from sweeps.runs.run import DataConfig, TrainConfig

PHASE_KINDS = ("mlm", "intermediate", "target")
TOP_KEYS = ("name", "encoder", "data", "seed", "seeds", "budget", "phases", "train", "tasks_files", "description")
PHASE_KEYS = ("mlm", "intermediate", "baseline", "targets")
BUDGET_KEYS = ("trials", "timeout_minutes")
SEARCHABLE = {f.name: f.type for f in fields(TrainConfig)}
DATA_OVERRIDES = ("max_length", "doc_stride", "max_train_examples", "max_eval_examples")


class ExperimentError(ValueError):
    pass


@dataclass(frozen=True)
class Experiment:
    name: str
    path: str
    encoders: tuple[str, ...]  # several: model scale as a sweep dimension
    data: DataConfig
    seeds: tuple[int, ...]  # every configuration runs once per seed
    trials: int
    timeout_minutes: float | None
    mlm: str | None
    intermediates: tuple[tuple[str, ...], ...]  # each a sequence of tasks; () is the no-intermediate baseline
    targets: tuple[str, ...]
    search: dict[str, dict] = field(default_factory=dict)  # phase kind -> {TrainConfig field: space}

    def space(self, kind: str, task: str) -> dict:
        """The search space of `task` in phase `kind`: the phase's, with the task's own overrides on top."""
        overrides = self.search.get("tasks", {}).get(task, {})
        return {**self.search.get(kind, {}), **{k: v for k, v in overrides.items() if k not in DATA_OVERRIDES}}

    def data_for(self, task: str) -> DataConfig:
        overrides = self.search.get("tasks", {}).get(task, {})
        return replace(self.data, **{k: v for k, v in overrides.items() if k in DATA_OVERRIDES})


def _fail(path, message: str):
    raise ExperimentError(f"{path}: {message}")


def _check_keys(path, where: str, given: dict, allowed) -> None:
    if not isinstance(given, dict):
        _fail(path, f"{where} must be a mapping")
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        _fail(path, f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(allowed)}")


def _check_space(path, kind: str, name: str, space) -> None:
    if name not in SEARCHABLE:
        _fail(path, f"train.{kind}: unknown option {name!r}; valid: {', '.join(SEARCHABLE)}")
    if isinstance(space, dict):
        _check_keys(path, f"train.{kind}.{name}", space, ("low", "high", "log"))
        if not {"low", "high"} <= set(space) or not float(space["low"]) < float(space["high"]):
            _fail(path, f"train.{kind}.{name}: a range needs low < high")
    elif isinstance(space, list) and not space:
        _fail(path, f"train.{kind}.{name}: an empty list of choices")


def _intermediates(path, phases: dict) -> tuple[tuple[str, ...], ...]:
    entries = phases.get("intermediate") or []
    sequences = []
    for entry in entries if isinstance(entries, list) else [entries]:
        if isinstance(entry, dict):  # {permutations: [a, b]}: every order of a set of tasks
            _check_keys(path, "phases.intermediate entry", entry, ("permutations",))
            sequences += list(itertools.permutations(entry["permutations"]))
        else:
            sequences.append((entry,) if isinstance(entry, str) else tuple(entry))
    sequences = tuple(sequences)
    if any(not seq or not all(isinstance(t, str) for t in seq) for seq in sequences):
        _fail(path, "phases.intermediate: each entry is a task name or a list of task names (a sequence)")
    return (((),) if phases.get("baseline", True) else ()) + sequences


def load_experiment(path: str | Path, registry=None) -> Experiment:
    from datamodules.tasks import load_registry

    path = Path(path)
    if not path.exists():
        raise ExperimentError(f"experiment file {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    _check_keys(path, "the experiment", raw, TOP_KEYS)
    for key in ("name", "phases"):
        if key not in raw:
            _fail(path, f"missing `{key}`")
    phases, budget, train = raw["phases"], raw.get("budget", {}), raw.get("train", {})
    _check_keys(path, "phases", phases, PHASE_KEYS)
    _check_keys(path, "budget", budget, BUDGET_KEYS)
    _check_keys(path, "train", train, PHASE_KINDS + ("tasks",))
    for kind, space in train.items():
        if kind == "tasks":
            continue
        _check_keys(path, f"train.{kind}", space, SEARCHABLE)
        for name, value in space.items():
            _check_space(path, kind, name, value)
    for task, overrides in train.get("tasks", {}).items():
        _check_keys(path, f"train.tasks.{task}", overrides, list(SEARCHABLE) + list(DATA_OVERRIDES))
    data_raw = raw.get("data", {})
    _check_keys(path, "data", data_raw, [f.name for f in fields(DataConfig)])
    tasks_files = tuple(str((path.parent / f).resolve()) for f in raw.get("tasks_files", ()))  # relative to this file
    data = DataConfig(**{**data_raw, "tasks_files": tasks_files,
                         "languages": tuple(data_raw.get("languages", ())),
                         "perturbations": tuple(data_raw.get("perturbations", ())),
                         "adversarial": tuple(data_raw.get("adversarial", ())),
                         "eval_splits": tuple(data_raw.get("eval_splits", ("validation", "test")))})
    _check_perturbations(path, data)
    targets = tuple(phases.get("targets") or ())
    if not targets:
        _fail(path, "phases.targets lists no target task")
    encoders = raw.get("encoder", "tiny-xlmr")
    seeds = raw.get("seeds", [raw.get("seed", 0)])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(x, int) for x in seeds):
        _fail(path, "seeds: a list of integers")
    experiment = Experiment(
        name=str(raw["name"]), path=str(path), encoders=tuple(map(str, encoders if isinstance(encoders, list)
                                                                  else [encoders])),
        data=data, seeds=tuple(seeds), trials=int(budget.get("trials", 1)),
        timeout_minutes=budget.get("timeout_minutes"), mlm=phases.get("mlm"),
        intermediates=_intermediates(path, phases), targets=targets, search=train)
    _check_tasks(path, experiment, registry or load_registry(data.tasks_files))
    return experiment


def _check_perturbations(path, data: DataConfig) -> None:
    from datamodules.perturb import check_perturbations

    try:
        check_perturbations(data.perturbations)
    except ValueError as error:
        _fail(path, f"data.perturbations: {error}")


def _check_tasks(path, experiment: Experiment, registry) -> None:
    def known(name: str, where: str):
        if name not in registry:
            _fail(path, f"{where}: unknown task {name!r}; registered: {', '.join(sorted(registry))}")
        return registry[name]

    if experiment.mlm and known(experiment.mlm, "phases.mlm").format != "masked_lm":
        _fail(path, f"phases.mlm: task {experiment.mlm!r} is not a masked_lm task")
    for sequence in experiment.intermediates:
        for name in sequence:
            known(name, "phases.intermediate")
    for name in experiment.targets:
        known(name, "phases.targets")
    for name in experiment.data.adversarial:  # used for the targets it fits (same format and labels)
        known(name, "data.adversarial")
