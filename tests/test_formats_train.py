"""For each format: the tiny model trains on the fixtures for a few steps, the loss falls, and where the
fixture is learnable the English score beats chance."""

from statistics import mean

import pytest
from training import FIXTURES, train_briefly

from datamodules.tasks import parse_task


def falls(losses, window=10):
    return mean(losses[-window:]) < 0.8 * mean(losses[:window])


@pytest.mark.parametrize("task_name, metric, chance", [
    ("pawsx", "accuracy", 50.0),
    ("mnli", "accuracy", 100 / 3),
    ("panx", "f1", 0.0),
    ("udpos", "f1", 100 / 17),
])
def test_format_learns(task_name, metric, chance, registry, tiny):
    task = registry[task_name]
    splits = ("test",) if task.has_split("test") else ("validation",)
    losses, scores = train_briefly(task, registry, tiny, languages=[task.train_language], splits=splits)
    assert falls(losses), losses
    assert scores[f"{splits[0]}/en/{metric}"] > chance + 10


@pytest.mark.parametrize("task_name", ["hellaswag", "commonsenseqa"])
def test_multiple_choice_fits_its_training_examples(task_name, registry, tiny):
    """The tiny random model cannot learn the fixtures' context-choice matching in a few steps; fitting 32 training
    examples shows the loss falls and that choices are scored and decoded right (accuracy on those examples)."""
    losses, scores = train_briefly(registry[task_name], registry, tiny, steps=80, lr=3e-3, batch_size=8,
                                   max_length=48, splits=("train",), max_examples=32)
    assert falls(losses), losses
    assert scores["train/en/accuracy"] > 100 / len(registry[task_name].labels) + 25


def test_span_qa_learns(registry, tiny):
    losses, scores = train_briefly(registry["squad_v1"], registry, tiny, steps=200, splits=("validation",))
    assert falls(losses), losses
    assert scores["validation/en/f1"] > 20


def test_tagging_with_labels_from_data_learns(registry, tiny):
    losses, scores = train_briefly(registry["ccg"], registry, tiny, splits=("test",))
    assert falls(losses)
    assert scores["test/en/accuracy"] > 30


def test_masked_lm_on_local_text_files(registry, tiny):
    text = FIXTURES / "local" / "mlm_text"
    task = parse_task("mlm_text", {
        "kind": "intermediate", "format": "masked_lm", "metric": "perplexity", "languages": ["en"],
        "columns": {"text": "text"},
        "sources": [{"dataset": "mlm_text", "data_files": {"train": str(text / "train.jsonl"),
                                                           "validation": str(text / "validation.jsonl")}}]})
    losses, scores = train_briefly(task, {"mlm_text": task}, tiny, steps=150, splits=("validation",))
    assert falls(losses)
    assert scores["validation/en/perplexity"] < 0.5 * len(tiny[1])  # far below a uniform guess over the vocabulary


def test_retrieval_is_evaluated_straight_from_the_encoder(registry, tiny):
    from training import FIXTURES

    from datamodules.datamodule import TaskDataModule
    from lightning_modules.formats import get_format

    import lightning as L
    from lightning_modules.task_module import TaskModule

    encoder, tokenizer = tiny
    task, fmt = registry["tatoeba"], get_format("retrieval")
    datamodule = TaskDataModule(task, fmt, tokenizer, data_dir=FIXTURES, eval_languages=["de", "fr"],
                                eval_splits=("validation",))
    module = TaskModule(encoder, fmt.build_head(encoder, task, None), fmt, None, tokenizer.pad_token_id)
    L.Trainer(logger=False, enable_progress_bar=False, accelerator="cpu").test(module, datamodule=datamodule,
                                                                               verbose=False)
    assert set(module.scores) >= {"validation/de/accuracy", "validation/fr/accuracy", "validation/mean/accuracy"}
    assert all(0 <= v <= 100 for v in module.scores.values())
