"""Micro-batches keep the effective batch and its loss: 4 examples x 8 accumulated give the gradient of one batch
of 32, for a token-level loss too (tagging: the mean over every labelled sub-token of the 32 examples, not the mean
of eight micro-batch means). The reference is computed here by hand from the same 32 examples."""

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from training import FIXTURES

from datamodules.datamodule import TaskDataModule
from datamodules.resumable import ShuffledBatches
from lightning_modules.formats import get_format
from lightning_modules.formats.base import FeatureSettings, encode
from lightning_modules.formats.tagging import IGNORE
from lightning_modules.micro_batch import divisors
from lightning_modules.task_module import TaskModule
from sweeps.config import TrainConfig

EFFECTIVE = 32


class FirstGradients(L.Callback):
    """The gradients of the first optimizer step."""

    def __init__(self):
        self.gradients = None

    def on_before_optimizer_step(self, trainer, module, optimizer):
        if self.gradients is None:
            self.gradients = {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}


def setup(registry, task_name: str, micro: int, cache_root):
    from lightning_modules.encoders import load_encoder

    task = registry[task_name]
    fmt = get_format(task.format)
    L.seed_everything(0, verbose=False)
    encoder, tokenizer = load_encoder("tiny-xlmr")
    datamodule = TaskDataModule(task, fmt, tokenizer, data_dir=FIXTURES, eval_languages=["en"],
                                settings=FeatureSettings(max_length=64), batch_size=micro,
                                accumulate=EFFECTIVE // micro, cache_root=cache_root, seed=0)
    datamodule.setup("fit")
    module = TaskModule(encoder, fmt.build_head(encoder, task, datamodule.labels), fmt, datamodule.labels,
                        tokenizer.pad_token_id, TrainConfig(batch_size=micro, accumulate=EFFECTIVE // micro))
    module.eval()  # no dropout, so that every split of the batch computes the same function (Lightning keeps it)
    return module, datamodule


def trained_gradients(registry, task_name: str, micro: int, cache_root) -> dict:
    module, datamodule = setup(registry, task_name, micro, cache_root)
    first = FirstGradients()
    trainer = L.Trainer(max_steps=1, accumulate_grad_batches=EFFECTIVE // micro, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, callbacks=[first], accelerator="cpu")
    trainer.fit(module, datamodule=datamodule)
    return first.gradients


def by_hand(registry, cache_root, micro: int | None) -> dict:
    """Gradients of the tagging loss over the first 32 training examples, as the sum of the per-token losses over
    the number of labelled tokens of all 32 (micro None), or as the mean of the means of micro-batches of `micro`."""
    module, datamodule = setup(registry, "panx", EFFECTIVE, cache_root)
    first = ShuffledBatches(len(datamodule.train_features), EFFECTIVE, seed=0).batches(0)[0]
    collate = module.fmt.collator(datamodule.tokenizer, datamodule.settings, training=True)
    rows = [datamodule.train_features[i] for i in first]
    parts = [rows] if micro is None else [rows[i: i + micro] for i in range(0, EFFECTIVE, micro)]
    for part in parts:
        batch = collate(part)
        logits = module.head(encode(module.encoder, batch["input_ids"], module.pad_id))
        losses = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE,
                                 reduction="none")
        labelled = (batch["labels"] != IGNORE).sum()
        (losses.sum() / labelled / len(parts)).backward()
    return {n: p.grad for n, p in module.named_parameters() if p.grad is not None}


def assert_close(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=1e-4, atol=1e-6, msg=name)


def test_tagging_micro_batches_give_the_gradient_of_the_whole_batch(registry, tiny, tmp_path):
    whole = by_hand(registry, tmp_path, None)
    assert_close(trained_gradients(registry, "panx", EFFECTIVE, tmp_path), whole)
    assert_close(trained_gradients(registry, "panx", 4, tmp_path), whole)
    # the mean of micro-batch means is another gradient: the test tells them apart
    mean_of_means = by_hand(registry, tmp_path, 4)
    with pytest.raises(AssertionError):
        assert_close(mean_of_means, whole)


def test_classification_micro_batches_give_the_gradient_of_the_whole_batch(registry, tiny, tmp_path):
    assert_close(trained_gradients(registry, "pawsx", 8, tmp_path), trained_gradients(registry, "pawsx", 32, tmp_path))


def test_micro_batch_settings():
    assert divisors(32) == [32, 16, 8, 4, 2, 1]
    assert TrainConfig(batch_size=4, accumulate=8, micro_batch=16).effective_batch == 32
    with pytest.raises(ValueError, match="does not divide the effective batch 32"):
        TrainConfig(batch_size=4, accumulate=8, micro_batch=5)
