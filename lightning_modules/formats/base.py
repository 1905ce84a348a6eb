"""What every format provides, and the helpers they share.

A format turns canonical rows (datamodules/sources.py) into features (`featurize`, cached by the datamodule),
features into padded batches (`collate`), batches into a loss and outputs (`step`, through the encoder and the
format's head), the outputs of one evaluation set into per-example predictions (`predict`: JSON-able records with
at least `gold`, `prediction` and `correct`), and those records into scores (`score_predictions`). Scores are
always computed from the records, so a run's predictions, written to disk, score to exactly its logged metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class FeatureSettings:
    max_length: int = 256
    doc_stride: int = 128  # span QA: overlap between windows of a long context
    max_query_length: int = 64  # span QA: questions are cut to this many tokens
    mlm_probability: float = 0.15
    whole_word_mask: bool = False


@dataclass
class EvalSet:
    """One language's evaluation data: canonical examples and their features (same order as the dataloader)."""

    task: object  # the TaskSpec these rows belong to (its metric and answer normalisation apply)
    lang: str
    split: str
    examples: object  # datasets.Dataset of canonical rows
    features: object  # datasets.Dataset of features
    key: dict | None = None  # what identifies the rows' content (it keys the feature cache)
    # the feature indices in the order the evaluation loader yields them (grouped by length); None: data order
    order: list[int] | None = None


@dataclass
class StepOutput:
    loss: torch.Tensor | None
    outputs: dict  # what `score` needs from this batch, detached and on the CPU


def pad(sequences: list[list[int]], value: int) -> torch.Tensor:
    """Right-pad to the longest sequence of this batch (dynamic padding)."""
    width = max(map(len, sequences))
    flat = []  # one tensor from one flat list: half the time of a tensor per row
    for seq in sequences:
        flat.extend(seq)
        flat.extend([value] * (width - len(seq)))
    return torch.tensor(flat, dtype=torch.long).view(len(sequences), width)


def encode(encoder, input_ids: torch.Tensor, pad_id: int, hidden_layer: int | None = None) -> torch.Tensor:
    """Hidden states of the encoder's last layer, or of `hidden_layer` (0 = embeddings)."""
    mask = (input_ids != pad_id).long()
    if hidden_layer is None:
        return encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
    return encoder(input_ids=input_ids, attention_mask=mask, output_hidden_states=True).hidden_states[hidden_layer]


def cpu(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().float().cpu() if tensor.is_floating_point() else tensor.detach().cpu()


class Format:
    name = ""
    # feature columns whose length is the sequence length (used for length-grouped batching)
    length_column = "input_ids"

    def featurize(self, batch: dict, tokenizer, task, settings: FeatureSettings, training: bool) -> dict:
        raise NotImplementedError

    def collate(self, rows: list[dict], tokenizer) -> dict:
        raise NotImplementedError

    def collator(self, tokenizer, settings: FeatureSettings, training: bool):
        """The DataLoader's collate_fn."""
        return lambda rows: self.collate(rows, tokenizer)

    def build_head(self, encoder, task, labels: list[str] | None) -> nn.Module:
        raise NotImplementedError

    def step(self, encoder, head: nn.Module, batch: dict, pad_id: int) -> StepOutput:
        raise NotImplementedError

    def predict(self, outputs: list[dict], eval_set: EvalSet, labels) -> list[dict]:
        raise NotImplementedError

    def score_predictions(self, records: list[dict], task, lang: str) -> dict[str, float]:
        raise NotImplementedError

    def score(self, outputs: list[dict], eval_set: EvalSet, labels) -> dict[str, float]:
        return self.score_predictions(self.predict(outputs, eval_set, labels), eval_set.task, eval_set.lang)

    def summary(self, scores: dict[str, float], eval_sets: list[EvalSet]) -> dict[str, float]:
        """Scores made from the per-set scores of `eval_sets` (a mixture's mean over its tasks); none by default."""
        return {}

    def loss_units(self, batch: dict) -> int:
        """What this format's loss is a mean over, counted in a (CPU) training batch: its examples; formats whose
        loss is a mean over tokens count those (tagging: labelled sub-tokens, masked LM: masked ones)."""
        return len(batch["input_ids"])

    def per_example(self) -> bool:
        """Whether `predict` gives one record per example (masked LM's are per batch: nothing to write)."""
        return True

    def in_data_order(self, outputs: list[dict], order: list[int]) -> list[dict]:
        """Outputs of batches that came in `order` (feature indices), as one batch in the features' own order.
        Every value of a per-example output holds one entry per row of its batch (a tensor or a list)."""
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
        restored = {}
        for key in outputs[0] if outputs else ():
            values = [o[key] for o in outputs]
            if isinstance(values[0], torch.Tensor):
                restored[key] = torch.cat(values)[inverse]
            else:
                flat = [row for value in values for row in value]
                restored[key] = [flat[i] for i in inverse.tolist()]
        return [restored]


class LinearHead(nn.Module):
    """dropout -> dense -> tanh -> dropout -> out: the RoBERTa classification head, used on one token; without the
    pooler (tagging), dropout -> out: the token-classification head."""

    def __init__(self, hidden_size: int, num_outputs: int, dropout: float = 0.1, pooler: bool = True):
        super().__init__()
        self.pooler = pooler
        self.dense = nn.Linear(hidden_size, hidden_size) if pooler else nn.Identity()
        self.activation = nn.Tanh() if pooler else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, num_outputs)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.pooler:
            hidden = self.activation(self.dense(self.dropout(hidden)))
        return self.out(self.dropout(hidden))


def hidden_size(encoder) -> int:
    return encoder.config.hidden_size
