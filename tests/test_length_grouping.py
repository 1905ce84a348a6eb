"""Length-grouped training batches: every example once per epoch, far less padding, reproducible under a seed."""

import lightning as L
import pytest
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


def evaluated(registry, tiny_tokenizer, task_name: str, cache_root, grouped: bool):
    """Scores and per-example predictions of the untrained tiny model (its head seeded) on `task_name`'s en and de
    test sets, and the padded size of the evaluation batches."""
    from lightning_modules.encoders import load_encoder
    from lightning_modules.task_module import TaskModule

    task = registry[task_name]
    fmt = get_format(task.format)
    L.seed_everything(0, verbose=False)
    encoder, tokenizer = load_encoder("tiny-xlmr")
    datamodule = TaskDataModule(task, fmt, tokenizer, data_dir=FIXTURES, eval_languages=["en", "de"],
                                eval_splits=("test",), settings=FeatureSettings(max_length=128, doc_stride=64),
                                eval_batch_size=8, cache_root=cache_root, group_eval_by_length=grouped)
    datamodule.setup("test")
    head = fmt.build_head(encoder, task, datamodule.labels)
    for parameter in head.parameters():  # large random weights: predictions that differ from example to example
        torch.nn.init.normal_(parameter.data)
    records = {}
    module = TaskModule(encoder, head, fmt, datamodule.labels, tokenizer.pad_token_id,
                        on_predictions=lambda s, r: records.update({(s.split, s.lang): r}))
    module.eval()
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    trainer.test(module, datamodule=datamodule, verbose=False)
    padded = sum(batch["input_ids"].numel() for loader in datamodule.test_dataloader() for batch in loader)
    orders = [s.order for s in datamodule.eval_sets]
    return module.scores, records, padded, orders


@pytest.mark.parametrize("task_name", ["panx", "xnli", "xquad"])
def test_evaluation_grouped_by_length_scores_and_predicts_as_in_data_order(registry, tiny, tmp_path, task_name):
    scores, records, padded, orders = evaluated(registry, tiny[1], task_name, tmp_path, grouped=False)
    g_scores, g_records, g_padded, g_orders = evaluated(registry, tiny[1], task_name, tmp_path, grouped=True)
    assert orders == [None, None]
    for order in g_orders:  # longest first: a permutation of the features, not their own order
        assert sorted(order) == list(range(len(order))) and order != sorted(order)
    assert g_padded < padded
    # what comes from the outputs differs from example to example (classification's gold comes from them too)
    assert len({str((r["gold"], r["prediction"])) for r in next(iter(records.values()))}) > 1
    assert g_records == records
    assert g_scores == scores


def test_outputs_come_back_in_the_features_order():
    from lightning_modules.formats.base import Format

    order = [2, 0, 3, 1]  # batches of two: features 2, 0 then 3, 1
    outputs = [{"predicted": torch.tensor([20, 0]), "rows": [[2], [0]]},
               {"predicted": torch.tensor([30, 10]), "rows": [[3], [1]]}]
    restored = Format().in_data_order(outputs, order)
    assert restored[0]["predicted"].tolist() == [0, 10, 20, 30]
    assert restored[0]["rows"] == [[0], [1], [2], [3]]
