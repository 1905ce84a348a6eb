"""Length-grouped training batches: every example once per epoch, far less padding, reproducible under a seed."""

import lightning as L
import torch
from training import FIXTURES

from datamodules.datamodule import LengthGroupedBatches, TaskDataModule, feature_lengths
from lightning_modules.formats import get_format
from lightning_modules.formats.base import FeatureSettings


def datamodule(registry, tokenizer, tmp_path, grouped: bool):
    module = TaskDataModule(registry["panx"], get_format("tagging"), tokenizer, data_dir=FIXTURES,
                            eval_languages=["en"], settings=FeatureSettings(max_length=64), batch_size=8,
                            cache_root=tmp_path, group_by_length=grouped)
    module.setup("fit")
    return module


def padding(loader, pad_id: int) -> float:
    padded = real = 0
    for batch in loader:
        padded += batch["input_ids"].numel()
        real += int((batch["input_ids"] != pad_id).sum())
    return 1 - real / padded


def test_grouped_batches_cover_every_example_once_with_less_padding(registry, tiny, tmp_path):
    tokenizer = tiny[1]
    L.seed_everything(0, verbose=False)
    grouped = datamodule(registry, tokenizer, tmp_path, grouped=True)
    sampler = grouped.train_dataloader().batch_sampler
    batches = list(sampler)
    assert len(batches) == len(sampler) and sorted(i for b in batches for i in b) == list(range(len(sampler.lengths)))
    assert list(sampler) != batches  # a new order each epoch
    plain = datamodule(registry, tokenizer, tmp_path, grouped=False)
    pad_id = tokenizer.pad_token_id
    assert padding(grouped.train_dataloader(), pad_id) < padding(plain.train_dataloader(), pad_id) / 2


def test_same_seed_same_batches():
    lengths = [5, 1, 9, 3, 3, 7, 2, 8, 6, 4] * 7
    torch.manual_seed(1)
    first = list(LengthGroupedBatches(lengths, 4, mega_batches=3))
    torch.manual_seed(1)
    assert list(LengthGroupedBatches(lengths, 4, mega_batches=3)) == first
    assert sorted(len(b) for b in first) == [2] + [4] * 17  # only the last mega-batch leaves a short batch


def test_lengths_of_nested_sequences_are_the_longest_choice():
    import datasets

    features = datasets.Dataset.from_dict({"input_ids": [[[1, 2], [1, 2, 3]], [[1], [1]], [[1, 2, 3, 4], []]]})
    assert feature_lengths(features, "input_ids") == [3, 1, 4]
    flat = datasets.Dataset.from_dict({"input_ids": [[1, 2], [1], [1, 2, 3]]})
    assert feature_lengths(flat.select([2, 0]), "input_ids") == [3, 2]
