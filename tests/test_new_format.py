"""A new format is one file: a module that defines SPEC and FORMAT, named by a task declaration, trains and is
evaluated like any built-in one, with nothing else changed. Here: sentence regression, scored by mean squared error
(lower is better, so checkpoint selection must minimise it)."""

import json
import random
import textwrap

import mlflow

from sweeps.cli import main

REGRESSION = '''\
"""Sentence regression: the first token's state -> one number; scored by mean squared error."""

import torch
import torch.nn.functional as F

from lightning_modules.formats.base import Format, LinearHead, StepOutput, cpu, encode, hidden_size, pad
from lightning_modules.formats.spec import FormatSpec

SPEC = FormatSpec("sentence_regression", fields={"text": "text", "score": "any"}, metrics={"mse": "min"},
                  input_fields=("text",))


class SentenceRegression(Format):
    name = "sentence_regression"

    def featurize(self, batch, tokenizer, task, settings, training):
        encoded = tokenizer(batch["text"], truncation=True, max_length=settings.max_length)
        return {"input_ids": encoded["input_ids"], "score": [float(s) for s in batch["score"]]}

    def collate(self, rows, tokenizer):
        return {"input_ids": pad([r["input_ids"] for r in rows], tokenizer.pad_token_id),
                "score": torch.tensor([r["score"] for r in rows])}

    def build_head(self, encoder, task, labels):
        return LinearHead(hidden_size(encoder), 1)

    def step(self, encoder, head, batch, pad_id):
        predicted = head(encode(encoder, batch["input_ids"], pad_id)[:, 0]).squeeze(-1).float()
        loss = F.mse_loss(predicted, batch["score"])
        return StepOutput(loss, {} if head.training else {"predicted": cpu(predicted), "gold": cpu(batch["score"])})

    def predict(self, outputs, eval_set, labels):
        predicted = torch.cat([o["predicted"] for o in outputs]).tolist()
        gold = torch.cat([o["gold"] for o in outputs]).tolist()
        return [{"index": i, "input": text, "gold": g, "prediction": p, "correct": abs(g - p) < 0.5}
                for i, (text, g, p) in enumerate(zip(eval_set.examples["text"], gold, predicted))]

    def score_predictions(self, records, task, lang):
        return {"mse": sum((r["prediction"] - r["gold"]) ** 2 for r in records) / len(records)}


FORMAT = SentenceRegression()
'''
WORDS = ["the", "house", "river", "small", "green", "walks", "today", "under", "city", "light"]


def write_split(path, n: int, seed: int):
    """Sentences whose score is 1 when they start with 'dog', else 0 (half of each)."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"sentence": " ".join([("dog" if i % 2 else "cat")] + rng.choices(WORDS, k=rng.randint(3, 8))),
             "value": float(i % 2)} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_format_from_one_file_trains_and_is_scored(tmp_path, monkeypatch, tiny):
    (tmp_path / "sentence_regression.py").write_text(REGRESSION)
    monkeypatch.syspath_prepend(str(tmp_path))
    data = tmp_path / "data"
    for lang, split, n, seed in (("en", "train", 256, 0), ("en", "validation", 64, 1), ("de", "test", 64, 2)):
        write_split(data / "regression" / lang / f"{split}.jsonl", n, seed)
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(textwrap.dedent("""\
        starts_with_dog:
          kind: target
          format: sentence_regression
          sources: [{dataset: regression, config: "{lang}", splits: {train: train, validation: validation, test: test}}]
          columns: {text: sentence, score: value}
          languages: [en, de]
          metric: mse
        """))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["fit", "starts_with_dog", "--tasks-file", str(tasks), "--data-dir", str(data), "--lr", "1e-3",
                 "--epochs", "3", "--batch-size", "16", "--eval-every", "8", "--max-length", "16",
                 "--tracking-uri", uri, "--experiment", "new-format"]) == 0
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("new-format").experiment_id])
    metrics = run.data.metrics
    assert run.info.status == "FINISHED" and run.data.params["data.eval_splits"] == "('validation', 'test')"
    history = [m.value for m in client.get_metric_history(run.info.run_id, "val/en/mse")]
    assert len(history) >= 4
    assert metrics["selection/score"] == min(history)  # lower is better: the best checkpoint is the lowest mse
    assert metrics["test/de/mse"] < 0.25 / 2  # far below always answering 0.5 (mse 0.25): it learned the rule
    tables = [a.path for a in client.list_artifacts(run.info.run_id, "predictions/starts_with_dog/test")]
    assert tables == ["predictions/starts_with_dog/test/de.parquet"]  # its predictions, like any format's
