"""Training batches that can resume mid-epoch: each epoch's order is a function of (seed, epoch) alone, and the
loader's position is part of Lightning's checkpoint (a loader with `state_dict`/`load_state_dict` is one Lightning
saves and restores), so a fit resumed from a checkpoint sees exactly the batches the interrupted one had not reached,
in the same order."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch.utils.data import DataLoader


class EpochBatches(ABC):
    """A batch sampler whose batches are a function of the epoch (`epoch_batches`), resumable from (epoch, skip).

    In a distributed fit each rank takes every `world`-th batch of the epoch, starting at its `rank`; the epoch's
    batches are repeated from its start up to a multiple of `world`, so that every rank has as many (each training
    step waits for all ranks)."""

    rank, world = 0, 1

    def __init__(self, batches_per_epoch: int):
        self.batches_per_epoch = batches_per_epoch
        self.epoch, self.skip = 0, 0  # the next epoch, and the batches of it already trained on (resumed fits)

    def shard(self, rank: int, world: int) -> EpochBatches:
        self.rank, self.world = rank, world
        return self

    @abstractmethod
    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The batches (lists of example indices) of `epoch`, in order."""

    def __len__(self) -> int:
        return -(-self.batches_per_epoch // self.world)

    def batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of `epoch`."""
        every = self.epoch_batches(epoch)
        return [every[index % len(every)] for index in range(self.rank, len(self) * self.world, self.world)]

    def __iter__(self):
        epoch, skip = self.epoch, self.skip
        self.epoch, self.skip = epoch + 1, 0
        yield from self.batches(epoch)[skip:]


class ShuffledBatches(EpochBatches):
    """Batches of indices, shuffled each epoch from (seed, epoch)."""

    def __init__(self, size: int, batch_size: int, seed: int):
        super().__init__(-(-size // batch_size))
        self.size, self.batch_size, self.seed = size, batch_size, seed

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + epoch)).tolist()
        return [order[i: i + self.batch_size] for i in range(0, self.size, self.batch_size)]


class ResumableLoader(DataLoader):
    """A DataLoader over an EpochBatches sampler (ShuffledBatches, LengthGroupedBatches) whose position — epoch and
    batches handed out — is its state.

    With `loss_units` (a function of a batch) and `accumulate`, each batch also carries `units`, its own count of
    what the loss averages, and `group_units`, that count over its accumulation group (the `accumulate` batches of
    one optimizer step, counted from the epoch's start as Lightning counts them), so that the group's loss can be
    the mean over all its units (lightning_modules/task_module.py)."""

    def __init__(self, dataset, batch_sampler, loss_units=None, accumulate: int = 1, **options):
        super().__init__(dataset, batch_sampler=batch_sampler, **options)
        self.position = {"epoch": 0, "batches": 0}
        self.loss_units, self.accumulate = loss_units, accumulate

    def __iter__(self):
        sampler = self.batch_sampler
        self.position = {"epoch": sampler.epoch, "batches": sampler.skip}
        batches = super().__iter__()
        if self.loss_units is None:
            batches = ([batch] for batch in batches)
        else:
            batches = _groups(batches, self.loss_units, self.accumulate, sampler.skip)
        for group in batches:
            for batch in group:
                self.position["batches"] += 1
                yield batch

    def state_dict(self) -> dict:
        return dict(self.position)

    def load_state_dict(self, state: dict) -> None:
        epoch, batches = state["epoch"], state["batches"]
        if batches >= len(self.batch_sampler):  # saved on the epoch's last batch: the next one starts afresh
            epoch, batches = epoch + 1, 0
        self.batch_sampler.epoch, self.batch_sampler.skip = epoch, batches


def _groups(batches, loss_units, accumulate: int, start: int):
    """The batches in accumulation groups (the first one shorter when the epoch resumes mid-group), each batch with
    its `units` and its group's `group_units`."""
    group, size = [], accumulate - start % accumulate
    for batch in batches:
        batch["units"] = loss_units(batch)
        group.append(batch)
        if len(group) == size:
            yield _with_total(group)
            group, size = [], accumulate
    if group:
        yield _with_total(group)


def _with_total(group: list[dict]) -> list[dict]:
    total = sum(batch["units"] for batch in group)
    for batch in group:
        batch["group_units"] = total
    return group
