"""A mixture of tasks as one format: one head per task on the shared encoder, each batch handled by its task's own
format (a mixture's batches carry their task's name, datamodules/mixtures.py).

Scores: each task's evaluation sets are named `<split>.<task>` (as an adversarial set is `test.anli_plus`), so a
task's English validation accuracy is `val.mnli/en/accuracy`. The mixture's own score, `<split>/<lang>/score`, is the
mean over its tasks of each task's own metric in its training language (jiant's equal metric aggregation); every
task of a mixture has a higher-is-better metric (the registry refuses others), so the mean is too; a split that not
every task has gets no mixture score. `val/en/score` selects the checkpoint and is the Optuna objective.
"""

from __future__ import annotations

from collections import defaultdict
from statistics import mean

from torch import nn

from lightning_modules.formats import get_format
from lightning_modules.formats.base import Format
from lightning_modules.formats.spec import FormatSpec
from lightning_modules.metrics.robustness import parse_split

SCORE = "score"
SPEC = FormatSpec("mixture", fields={}, metrics={SCORE: "max"})


class MixtureHeads(nn.ModuleDict):
    """One head per task of the mixture, by task name; `formats` says which format each head belongs to."""

    def __init__(self, heads: dict[str, nn.Module], formats: dict[str, str]):
        super().__init__(heads)
        self.formats = formats


class Mixture(Format):
    name = "mixture"

    def build_head(self, encoder, task, labels: dict[str, list[str] | None]):
        return MixtureHeads({m.name: get_format(m.format).build_head(encoder, m, labels[m.name]) for m in task.members},
                            {m.name: m.format for m in task.members})

    def step(self, encoder, head: MixtureHeads, batch, pad_id):
        task = batch["task"]
        return get_format(head.formats[task]).step(encoder, head[task], batch, pad_id)

    def predict(self, outputs, eval_set, labels):
        task = eval_set.task
        return get_format(task.format).predict(outputs, eval_set, labels[task.name])

    def score_predictions(self, records, task, lang):
        return get_format(task.format).score_predictions(records, task, lang)

    def summary(self, scores: dict[str, float], eval_sets) -> dict[str, float]:
        by_split = defaultdict(list)
        for eval_set in eval_sets:
            split, member = parse_split(eval_set.split)
            task = eval_set.task
            if member == task.name and eval_set.lang == task.train_language:
                by_split[(split, task.train_language)].append(scores[f"{eval_set.split}/{eval_set.lang}/{task.metric}"])
        tasks = len({eval_set.task.name for eval_set in eval_sets})
        return {f"{split}/{lang}/{SCORE}": mean(values) for (split, lang), values in by_split.items()
                if len(values) == tasks}  # a split some tasks lack (a test split) has no mixture score


FORMAT = Mixture()
