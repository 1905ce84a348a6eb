"""A mixture's data (datamodules/mixtures.py defines mixtures and their rates): each task read by its own
TaskDataModule, training batches drawn from the tasks by the rates, deterministic by (seed, epoch)."""

from __future__ import annotations

import bisect
import itertools

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.datamodule import TaskDataModule
from datamodules.mixtures import rates, steps_per_epoch
from datamodules.resumable import ResumableLoader
from datamodules.tasks import TaskSpec
from lightning_modules.formats import get_format
from lightning_modules.metrics.robustness import perturbed_split



class MixtureBatches:
    """Batches of indices into the tasks' concatenated training features, each from one task drawn by `rates`; each
    epoch is `steps` batches, a function of (seed, epoch) alone (the interface of datamodules/resumable.py)."""

    def __init__(self, sizes: list[int], rates: list[float], batch_size: int, seed: int, steps: int):
        self.sizes, self.rates, self.batch_size, self.seed, self.steps = sizes, rates, batch_size, seed, steps
        self.offsets = [0, *itertools.accumulate(sizes)][:-1]
        self.epoch, self.skip = 0, 0

    def __len__(self) -> int:
        return self.steps

    def draws(self, epoch: int) -> list[int]:
        """The task index of each batch of `epoch`."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.multinomial(torch.tensor(self.rates, dtype=torch.float64), self.steps, replacement=True,
                                 generator=generator).tolist()

    def _task_batches(self, task: int, epoch: int):
        """The task's batches in a shuffled order, reshuffled each time they are used up (endless)."""
        size, offset = self.sizes[task], self.offsets[task]
        for round_ in itertools.count():
            seed = ((self.seed * 1_000_003 + epoch) * 1_009 + task) * 10_007 + round_
            order = torch.randperm(size, generator=torch.Generator().manual_seed(seed % 2 ** 63)).tolist()
            for start in range(0, size, self.batch_size):
                yield [offset + index for index in order[start: start + self.batch_size]]

    def batches(self, epoch: int) -> list[list[int]]:
        streams = [self._task_batches(task, epoch) for task in range(len(self.sizes))]
        return [next(streams[task]) for task in self.draws(epoch)]

    def __iter__(self):
        epoch, skip = self.epoch, self.skip
        self.epoch, self.skip = epoch + 1, 0
        yield from self.batches(epoch)[skip:]


class TaggedFeatures(Dataset):
    """The tasks' training features end to end; an item is (task name, feature row)."""

    def __init__(self, parts: list[tuple[str, object]]):
        self.names = [name for name, _ in parts]
        self.features = [features for _, features in parts]
        self.offsets = [0, *itertools.accumulate(len(f) for f in self.features)]

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, index: int):
        task = bisect.bisect_right(self.offsets, index) - 1
        return self.names[task], self.features[task][index - self.offsets[task]]


class TaskCollate:
    """A task's own collate, and the task's name in the batch (the mixture format routes on it)."""

    def __init__(self, collates: dict):
        self.collates = collates

    def __call__(self, rows):
        if isinstance(rows[0], tuple):  # training: (task, row) pairs, all of one task
            task, rows = rows[0][0], [row for _, row in rows]
        else:
            task = next(iter(self.collates))
        return {**self.collates[task](rows), "task": task}


class MixtureDataModule(L.LightningDataModule):
    """The mixture's tasks, each read by its own TaskDataModule (same options, same feature cache); training batches
    drawn by the mixture's rates; each task's validation and evaluation sets named `<split>.<task>`."""

    def __init__(self, task: TaskSpec, fmt, tokenizer, labels: dict | None = None, seed: int | None = None,
                 robustness=None, train_task=None, group_by_length: bool = False, **options):
        """`options` go to each task's TaskDataModule; a mixture has no robustness sets and no length grouping, and
        is its own training task (the preflight refuses streaming and robustness sets for it)."""
        super().__init__()
        self.task, self.fmt, self.tokenizer, self.seed = task, fmt, tokenizer, seed or 0
        self.parts = {m.name: TaskDataModule(m, get_format(m.format), tokenizer, labels=(labels or {}).get(m.name),
                                             seed=seed, **options) for m in task.members}
        first = next(iter(self.parts.values()))
        self.data_dir, self.robustness, self.perturbed = first.data_dir, first.robustness, {}
        self.batch_size, self.num_workers = first.batch_size, first.num_workers
        self.eval_sets, self._eval_tasks = [], []
        self._batches: MixtureBatches | None = None

    @property
    def labels(self) -> dict[str, list[str] | None]:
        return {name: part.labels for name, part in self.parts.items()}

    @property
    def missing(self) -> list[str]:
        return [f"{name}:{where}" for name, part in self.parts.items() for where in part.missing]

    @property
    def cache_hits(self) -> dict[str, bool]:
        return {f"{name}.{key}": hit for name, part in self.parts.items() for key, hit in part.cache_hits.items()}

    @property
    def train_sizes(self) -> dict[str, int]:
        """Each task's number of training examples (what the rates are computed from)."""
        return {name: part.train_examples for name, part in self.parts.items()}

    def check_data(self, training: bool) -> int | None:
        """Every member's data checked; returns the training examples an epoch draws on (each task's up to the cap)."""
        counts = [part.check_data(training) for part in self.parts.values()]
        if None in counts:
            return None
        cap = self.task.mixture.max_examples_per_task
        return sum(min(n, cap) if cap else n for n in counts)

    def read_sets(self) -> list:
        return [found for part in self.parts.values() for found in part.read_sets()]

    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate") and self._batches is None:
            for name, part in self.parts.items():
                part.setup(stage)
                if part.selection_set is not None:
                    part.selection_set.split = perturbed_split(part.selection_set.split, name)
            self._batches = self._sampler()
        if stage == "test" and not self.eval_sets:
            for name, part in self.parts.items():
                part.setup(stage)
                for eval_set in part.eval_sets:
                    eval_set.split = perturbed_split(eval_set.split, name)
                    self.eval_sets.append(eval_set)
                    self._eval_tasks.append(name)

    def _sampler(self) -> MixtureBatches:
        sizes = self.train_sizes
        chosen = rates(self.task.mixture, sizes)
        return MixtureBatches([len(part.train_features) for part in self.parts.values()],
                              [chosen[name] for name in self.parts], self.batch_size, self.seed,
                              steps_per_epoch(self.task.mixture, sizes, self.batch_size))

    @property
    def selection_sets(self):
        return [part.selection_set for part in self.parts.values() if part.selection_set is not None]

    def train_dataloader(self):
        collates = {name: part.fmt.collator(self.tokenizer, part.settings, training=True)
                    for name, part in self.parts.items()}
        features = TaggedFeatures([(name, part.train_features) for name, part in self.parts.items()])
        return ResumableLoader(features, self._batches, collate_fn=TaskCollate(collates),
                               num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                               pin_memory=torch.cuda.is_available())

    def _eval_loader(self, task: str, eval_set):
        part = self.parts[task]
        collate = TaskCollate({task: part.fmt.collator(self.tokenizer, part.settings, training=False)})
        return DataLoader(eval_set.features, batch_size=part.eval_batch_size, shuffle=False, collate_fn=collate,
                          num_workers=self.num_workers, pin_memory=torch.cuda.is_available())

    def val_dataloader(self):
        return [self._eval_loader(name, part.selection_set) for name, part in self.parts.items()
                if part.selection_set is not None]

    def test_dataloader(self):
        return [self._eval_loader(task, eval_set) for task, eval_set in zip(self._eval_tasks, self.eval_sets)]

    def sizes(self) -> dict[str, int]:
        return {f"{name}.{key}": n for name, part in self.parts.items() for key, n in part.sizes().items()}


def task_datamodule(task: TaskSpec, fmt, tokenizer, **options):
    """The datamodule of a task: a TaskDataModule, or a MixtureDataModule for a mixture (same options)."""
    return MixtureDataModule(task, fmt, tokenizer, **options) if task.mixture else \
        TaskDataModule(task, fmt, tokenizer, **options)
