"""Sentence and sentence-pair classification (XNLI, PAWS-X, MNLI, QQP, ANLI+): the first token's state -> labels."""

import torch
import torch.nn.functional as F

from lightning_modules.formats.base import Format, LinearHead, StepOutput, cpu, encode, hidden_size, pad
from lightning_modules.formats.spec import FormatSpec
from lightning_modules.metrics.classification import accuracy


SPEC = FormatSpec("classification", fields={"text_a": "text", "label": "label"}, optional_fields={"text_b": "text"},
                  metrics={"accuracy": "max"}, input_fields=("text_a", "text_b"), needs_labels=True)


class Classification(Format):
    name = "classification"

    def featurize(self, batch, tokenizer, task, settings, training):
        pairs = batch.get("text_b")
        encoded = tokenizer(batch["text_a"], pairs, truncation=True, max_length=settings.max_length)
        return {"input_ids": encoded["input_ids"], "label": batch["label"]}

    def collate(self, rows, tokenizer):
        pad_id = tokenizer.pad_token_id
        return {"input_ids": pad([r["input_ids"] for r in rows], pad_id),
                "label": torch.tensor([r["label"] for r in rows])}

    def build_head(self, encoder, task, labels):
        return LinearHead(hidden_size(encoder), len(labels))

    def step(self, encoder, head, batch, pad_id):
        logits = head(encode(encoder, batch["input_ids"], pad_id)[:, 0])
        loss = F.cross_entropy(logits.float(), batch["label"])
        if head.training:  # outputs are for scoring: none while training (no copy to the CPU, no wait for a GPU)
            return StepOutput(loss, {})
        return StepOutput(loss, {"predicted": cpu(logits.argmax(-1)), "gold": cpu(batch["label"])})

    def predict(self, outputs, eval_set, labels):
        predicted = torch.cat([o["predicted"] for o in outputs]).tolist()
        gold = torch.cat([o["gold"] for o in outputs]).tolist()
        inputs = self.inputs(eval_set.examples)
        name = (lambda i: labels[i]) if labels else str
        return [{"index": index, "input": text, "gold": name(g), "prediction": name(p), "correct": g == p}
                for index, (text, g, p) in enumerate(zip(inputs, gold, predicted))]

    @staticmethod
    def inputs(examples) -> list[str]:
        if "text_b" not in examples.column_names:
            return examples["text_a"]
        return [a if b is None else f"{a} [SEP] {b}" for a, b in zip(examples["text_a"], examples["text_b"])]

    def score_predictions(self, records, task, lang):
        return accuracy([r["gold"] for r in records], [r["prediction"] for r in records])


FORMAT = Classification()
