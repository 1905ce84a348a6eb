"""Multiple choice (HellaSwag, CommonsenseQA, Cosmos QA, XCOPA): each (context, choice) pair is encoded,
its first token scored, and the choices compete in one softmax."""

import torch
import torch.nn.functional as F

from lightning_modules.formats.base import LinearHead, StepOutput, cpu, encode, hidden_size, pad
from lightning_modules.formats.classification import Classification
from lightning_modules.formats.spec import FormatSpec


SPEC = FormatSpec("multiple_choice", fields={"context": "text", "choices": "texts", "label": "label"},
                  metrics={"accuracy": "max"}, input_fields=("context", "choices"), needs_labels=True)


class MultipleChoice(Classification):
    """Scored like classification: accuracy of the predicted choice."""

    name = "multiple_choice"

    def featurize(self, batch, tokenizer, task, settings, training):
        input_ids = []
        for context, choices in zip(batch["context"], batch["choices"]):
            encoded = tokenizer([context] * len(choices), choices, truncation=True, max_length=settings.max_length)
            input_ids.append(encoded["input_ids"])
        return {"input_ids": input_ids, "label": batch["label"]}

    def collate(self, rows, tokenizer):
        pad_id = tokenizer.pad_token_id
        num_choices = len(rows[0]["input_ids"])
        if any(len(r["input_ids"]) != num_choices for r in rows):
            raise ValueError("every example of a multiple-choice task must have the same number of choices")
        flat = pad([choice for r in rows for choice in r["input_ids"]], pad_id)
        return {"input_ids": flat.view(len(rows), num_choices, -1), "label": torch.tensor([r["label"] for r in rows])}

    def build_head(self, encoder, task, labels):
        return LinearHead(hidden_size(encoder), 1)

    def step(self, encoder, head, batch, pad_id):
        batch_size, num_choices, length = batch["input_ids"].shape
        hidden = encode(encoder, batch["input_ids"].view(-1, length), pad_id)[:, 0]
        logits = head(hidden).view(batch_size, num_choices)
        loss = F.cross_entropy(logits.float(), batch["label"])
        if head.training:  # outputs are for scoring: none while training (no copy to the CPU, no wait for a GPU)
            return StepOutput(loss, {})
        return StepOutput(loss, {"predicted": cpu(logits.argmax(-1)), "gold": cpu(batch["label"])})

    @staticmethod
    def inputs(examples) -> list[str]:
        return [f"{context} [CHOICES] " + " | ".join(choices)
                for context, choices in zip(examples["context"], examples["choices"])]


FORMAT = MultipleChoice()
