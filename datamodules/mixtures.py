"""Mixtures of tasks: one intermediate phase that trains several tasks (any formats, one head each) on the shared
encoder, each training batch drawn from one task by a sampling rule, as jiant's multi-task samplers do.

Declared by name in a tasks file, beside tasks (datamodules/tasks.yaml's shape), and used wherever a task name is:

    nli_qa:
      mixture:
        tasks: [mnli, squad_v1, hellaswag]
        sampling: temperature         # proportional (default) | temperature | equal
        temperature: 2.0              # only with sampling: temperature; > 0
        max_examples_per_task: 20000  # cap: a task counts as at most this many examples when rates are computed

Rates, from n_i = the task's training examples (after data.max_train_examples) and c = the cap:
proportional p_i ∝ min(n_i, c); temperature p_i ∝ min(n_i, c)^(1/T); equal p_i = 1/k. As in jiant, the cap changes
the rates only: every example of every task can still be drawn. An epoch is ceil(Σ min(n_i, c) / batch size) batches;
each batch's task is drawn independently with the rates (torch.multinomial from a generator seeded by (seed, epoch)),
and each task's batches come from its own shuffled order, reshuffled when used up. So the draw is a function of
(seed, epoch) alone: a resumed fit sees the same batches (datamodules/resumable.py).

The mixture's English validation score is the mean of its tasks' own metrics (lightning_modules/formats/mixture.py).
Checked against the registry in datamodules/tasks.py; its batches and data: datamodules/mixture_data.py.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SAMPLING = ("proportional", "temperature", "equal")


class Mixture(BaseModel):
    """A mixture's definition (the `mixture:` of a tasks-file entry)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tasks: tuple[str, ...] = Field(min_length=2, description="the tasks mixed (at least two, each once)")
    sampling: Literal[SAMPLING] = Field("proportional", description="how a batch's task is drawn")
    temperature: float = Field(1.0, gt=0, description="sampling: temperature: p_i ∝ n_i^(1/T)")
    max_examples_per_task: int | None = Field(None, ge=1, description="a task counts as at most N examples")

    @field_validator("tasks")
    @classmethod
    def _distinct(cls, tasks: tuple[str, ...]) -> tuple[str, ...]:
        repeated = sorted({t for t in tasks if tasks.count(t) > 1})
        if repeated:
            raise ValueError(f"task(s) {', '.join(repeated)} listed twice")
        return tasks

    @model_validator(mode="after")
    def _temperature_with_its_rule(self):
        given = "temperature" in self.model_fields_set and self.temperature != 1.0  # a round trip carries 1.0
        if given and self.sampling != "temperature":
            raise ValueError(f"temperature is for sampling: temperature (sampling is {self.sampling})")
        return self


def rates(mixture: Mixture, sizes: dict[str, int]) -> dict[str, float]:
    """Each task's probability of being drawn for a batch, from its number of training examples."""
    capped = {task: min(n, mixture.max_examples_per_task or n) for task, n in sizes.items()}
    if mixture.sampling == "equal":
        weights = {task: 1.0 for task in capped}
    else:
        power = 1.0 / mixture.temperature if mixture.sampling == "temperature" else 1.0
        weights = {task: float(n) ** power for task, n in capped.items()}
    total = sum(weights.values())
    return {task: weight / total for task, weight in weights.items()}


def steps_per_epoch(mixture: Mixture, sizes: dict[str, int], batch_size: int) -> int:
    return math.ceil(sum(min(n, mixture.max_examples_per_task or n) for n in sizes.values()) / batch_size)


def describe(mixture: Mixture, sizes: dict[str, int]) -> dict[str, object]:
    """The mixture's settings and resulting rates, flat (MLflow params and tags)."""
    found = {"mixture.tasks": ",".join(mixture.tasks), "mixture.sampling": mixture.sampling,
             "mixture.temperature": mixture.temperature if mixture.sampling == "temperature" else "",
             "mixture.max_examples_per_task": mixture.max_examples_per_task or ""}
    found.update({f"mixture.examples.{task}": n for task, n in sizes.items()})
    found.update({f"mixture.rate.{task}": round(rate, 6) for task, rate in rates(mixture, sizes).items()})
    return found
