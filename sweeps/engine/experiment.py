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
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml
from pydantic import Field, field_validator

from sweeps.config import ConfigError, DataConfig, TrainConfig
from sweeps.config.errors import validate
from sweeps.config.schema import Settings, safe_name

PHASE_KINDS = ("mlm", "intermediate", "target")
DATA_OVERRIDES = ("max_length", "doc_stride", "max_train_examples", "max_eval_examples")


class ExperimentError(ConfigError):
    pass


class Budget(Settings):
    trials: int = Field(1, ge=1, le=100000, description="trials per study")
    timeout_minutes: float | None = Field(None, gt=0, description="time limit of the whole sweep")


class Phases(Settings):
    mlm: str | None = None
    intermediate: list[str | list[str] | dict[str, list[str]]] | str = []
    baseline: bool = True
    targets: list[str] | str = Field(min_length=1)


class Range(Settings):
    low: float
    high: float
    log: bool = False


class TrainSpaces(Settings):
    """Per phase kind, a search space over TrainConfig fields; per task, overrides (training and input length)."""

    mlm: dict[str, object] = {}
    intermediate: dict[str, object] = {}
    target: dict[str, object] = {}
    tasks: dict[str, dict[str, object]] = {}


class ExperimentFile(Settings):
    """The keys of an experiment file (see this module's docstring)."""

    name: str
    description: str = ""
    encoder: str | list[str] = "tiny-xlmr"
    data: DataConfig = DataConfig()
    seed: int = Field(0, ge=0)
    seeds: list[int] | None = Field(None, min_length=1)
    budget: Budget = Budget()
    phases: Phases
    train: TrainSpaces = TrainSpaces()
    tasks_files: list[str] = []

    @field_validator("name")
    @classmethod
    def _safe(cls, value: str) -> str:
        return safe_name(value, "name")


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
    description: str = ""
    mixtures: dict = field(default_factory=dict)  # a mixture task's name -> its definition (datamodules/mixtures.py)

    def space(self, kind: str, task: str) -> dict:
        """The search space of `task` in phase `kind`: the phase's, with the task's own overrides on top."""
        overrides = self.search.get("tasks", {}).get(task, {})
        return {**self.search.get(kind, {}), **{k: v for k, v in overrides.items() if k not in DATA_OVERRIDES}}

    def data_for(self, task: str) -> DataConfig:
        overrides = self.search.get("tasks", {}).get(task, {})
        # a mixture's definition is part of its data: of its runs' params, and of its phase key
        return self.data.evolve(**{k: v for k, v in overrides.items() if k in DATA_OVERRIDES},
                                mixture=self.mixtures.get(task))

    def phase_tasks(self) -> list[tuple[str, str]]:
        """Every (phase kind, task) the experiment trains or evaluates, each once."""
        found = [("mlm", self.mlm)] if self.mlm else []
        found += [("intermediate", t) for sequence in self.intermediates for t in sequence]
        found += [("target", t) for t in self.targets]
        return list(dict.fromkeys(found))

    def banner(self) -> str:
        """The sweep in words: encoder(s), phases, targets, trials and time limit."""
        sequences = [" then ".join(sequence) for sequence in self.intermediates if sequence]
        baseline = () in self.intermediates
        intermediate = ", ".join(sequences) or "none"
        if sequences and baseline:
            intermediate += ", and the baseline without one"
        limit = f"; time limit {self.timeout_minutes:g} minutes" if self.timeout_minutes else ""
        return (f"{self.name}: encoder {', '.join(self.encoders)}" + (f"; MLM {self.mlm}" if self.mlm else "") +
                f"; intermediate {intermediate}; targets {', '.join(self.targets)}; {self.trials} trial"
                f"{'s' if self.trials != 1 else ''} per study{limit}")

    def summary(self) -> str:
        phases = self.phase_tasks()
        return (f"experiment {self.name}: {len(phases)} phase tasks, {len(self.intermediates)} intermediate "
                f"configurations x {len(self.targets)} targets, {len(self.encoders)} encoder(s) x "
                f"{len(self.seeds)} seed(s), {self.trials} trial(s) per study")


    def note(self) -> str:
        """What the MLflow experiment holds, in words (its description in the MLflow UI)."""
        sequences = [" > ".join(s) for s in self.intermediates if s]
        baseline = " (and none: the baseline)" if () in self.intermediates else ""
        mlm = f"masked-LM phase {self.mlm}, then " if self.mlm else ""
        return (f"{self.description + '. ' if self.description else ''}xstilts sweep `{self.name}` "
                f"({Path(self.path).name}): {mlm}intermediate tasks {', '.join(sequences) or 'none'}{baseline}; "
                f"targets {', '.join(self.targets)}; encoder {', '.join(self.encoders)}; seed(s) "
                f"{', '.join(map(str, self.seeds))}; {self.trials} Optuna trial(s) per study. Runs: the parent "
                f"`sweep-{self.name}`, one run per trial beneath it and the phase run it trained beneath that. "
                f"`xstilts report {self.name}` writes the intermediate x target table; `xstilts promote TASK "
                f"--experiment {self.name}` registers a target's best run.")


def _fail(path, message: str):
    raise ExperimentError(f"{path}: {message}")


def _check_space(path, where: str, spaces: dict, extra_keys=()) -> None:
    """Every searched or fixed value is a valid TrainConfig value: a value, a list of choices, {low, high[, log]}."""
    fields = TrainConfig.model_fields
    for name, space in spaces.items():
        if name in extra_keys:
            continue
        if name not in fields:
            _fail(path, f"{where}: unknown option {name!r}; valid: {', '.join([*fields, *extra_keys])}")
        if isinstance(space, dict):
            bounds = validate(Range, space, lambda loc: f"{path}: {where}.{name}.{'.'.join(loc)}")
            if not bounds.low < bounds.high:
                _fail(path, f"{where}.{name}: a range needs low < high (got {space['low']}, {space['high']})")
            values = [space["low"], space["high"]]
        elif isinstance(space, list):
            if not space:
                _fail(path, f"{where}.{name}: an empty list of choices")
            values = space
        else:
            values = [space]
        for value in values:
            validate(TrainConfig, {name: value}, lambda loc: f"{path}: {where}.{name}")
        if name == "num_nodes" and values != [1]:  # a sweep worker's phase trains on its own machine
            _fail(path, f"{where}.num_nodes {space}: a sweep's phases train on one machine each; valid: 1 (train a "
                        f"run across machines with `srun xstilts fit … --num-nodes N`)")


def _intermediates(path, phases: Phases) -> tuple[tuple[str, ...], ...]:
    entries = phases.intermediate if isinstance(phases.intermediate, list) else [phases.intermediate]
    sequences = []
    for entry in entries:
        if isinstance(entry, dict):  # {permutations: [a, b]}: every order of a set of tasks
            if set(entry) != {"permutations"}:
                _fail(path, f"phases.intermediate entry {entry}: unknown key(s); valid: permutations")
            sequences += list(itertools.permutations(entry["permutations"]))
        else:
            sequences.append((entry,) if isinstance(entry, str) else tuple(entry))
    if any(not seq for seq in sequences):
        _fail(path, "phases.intermediate: each entry is a task name or a list of task names (a sequence)")
    return (((),) if phases.baseline else ()) + tuple(sequences)


def load_experiment(path: str | Path, registry=None) -> Experiment:
    from datamodules.tasks import load_registry

    path = Path(path)
    if not path.is_file():
        raise ExperimentError(f"experiment file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ExperimentError(f"{path}{where}: not valid YAML ({getattr(error, 'problem', error)})") from None
    if not isinstance(raw, dict):
        _fail(path, "an experiment file is a mapping of keys (name, phases, ...)")
    tasks_files = [str((path.parent / f).resolve()) for f in raw.get("tasks_files", ()) or ()]
    raw_data = raw.get("data") or {}
    if isinstance(raw_data, dict) and "mixture" in raw_data:
        _fail(path, "data.mixture: declare a mixture by name in a tasks file (see datamodules/mixtures.py) and "
                    "use its name as an intermediate task")
    if isinstance(raw_data, dict):  # tasks files are relative to the experiment file
        raw = {**raw, "data": {**raw_data, "tasks_files": tasks_files}}
    parsed = validate(ExperimentFile, raw, lambda loc: f"{path}: {'.'.join(map(str, loc))}")
    for kind in PHASE_KINDS:
        _check_space(path, f"train.{kind}", getattr(parsed.train, kind))
    for task, overrides in parsed.train.tasks.items():
        _check_space(path, f"train.tasks.{task}", overrides, DATA_OVERRIDES)
        parsed.data.evolve(**{k: v for k, v in overrides.items() if k in DATA_OVERRIDES})
    _check_perturbations(path, parsed.data)
    encoders = parsed.encoder if isinstance(parsed.encoder, list) else [parsed.encoder]
    targets = parsed.phases.targets if isinstance(parsed.phases.targets, list) else [parsed.phases.targets]
    experiment = Experiment(
        name=parsed.name, path=str(path), encoders=tuple(encoders), data=parsed.data,
        seeds=tuple(parsed.seeds or [parsed.seed]), trials=parsed.budget.trials,
        timeout_minutes=parsed.budget.timeout_minutes, mlm=parsed.phases.mlm,
        intermediates=_intermediates(path, parsed.phases), targets=tuple(targets),
        search=parsed.train.model_dump(), description=parsed.description)
    registry = registry or load_registry(parsed.data.tasks_files)
    _check_tasks(path, experiment, registry)
    mixtures = {name: registry[name].mixture for sequence in experiment.intermediates for name in sequence
                if registry[name].mixture is not None}
    return replace(experiment, mixtures=mixtures)


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
        if known(name, "phases.targets").mixture is not None:
            _fail(path, f"phases.targets: {name!r} is a mixture; a mixture is an intermediate phase")
    for name in experiment.data.adversarial:  # used for the targets it fits (same format and labels)
        known(name, "data.adversarial")
