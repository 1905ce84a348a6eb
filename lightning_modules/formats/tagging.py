"""Token tagging (PAN-X, UD-POS, CCG): a label per word, trained and predicted on each word's first sub-token.

Scores are computed on the words of the original rows, so a word lost to truncation counts as tagged with the
fallback label ("O" where the label set has it), never silently dropped.
"""

import torch
import torch.nn.functional as F

from lightning_modules.formats.base import Format, LinearHead, StepOutput, encode, hidden_size, pad
from lightning_modules.formats.spec import FormatSpec
from lightning_modules.metrics.tagging import tag_scores, token_accuracy

IGNORE = -100


def first_subtoken_alignment(word_ids: list, tags: list[int]) -> tuple[list[int], list[int]]:
    """Per sub-token: the word's label on its first sub-token (else IGNORE), and that word's index (else -1)."""
    labels, word_index, previous = [], [], None
    for word in word_ids:
        first = word is not None and word != previous
        labels.append(tags[word] if first else IGNORE)
        word_index.append(word if first else -1)
        previous = word
    return labels, word_index


def words_from_subtokens(predicted: list[int], word_index: list[int], num_words: int, fallback: int) -> list[int]:
    words = [fallback] * num_words
    for label, word in zip(predicted, word_index):
        if word >= 0:
            words[word] = label
    return words


SPEC = FormatSpec("tagging", fields={"tokens": "tokens", "tags": "labels"}, metrics={"f1": "max", "accuracy": "max"},
                  input_fields=("tokens",), needs_labels=True, label_field="tags", aligned_words=True)


class Tagging(Format):
    name = "tagging"

    def featurize(self, batch, tokenizer, task, settings, training):
        encoded = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True,
                            max_length=settings.max_length)
        aligned = [first_subtoken_alignment(encoded.word_ids(i), tags) for i, tags in enumerate(batch["tags"])]
        return {"input_ids": encoded["input_ids"], "labels": [a[0] for a in aligned],
                "word_index": [a[1] for a in aligned]}

    def collate(self, rows, tokenizer):
        pad_id = tokenizer.pad_token_id
        return {"input_ids": pad([r["input_ids"] for r in rows], pad_id),
                "labels": pad([r["labels"] for r in rows], IGNORE)}

    def loss_units(self, batch):
        return int((batch["labels"] != IGNORE).sum())

    def build_head(self, encoder, task, labels):
        return LinearHead(hidden_size(encoder), len(labels), pooler=False)

    def step(self, encoder, head, batch, pad_id):
        logits = head(encode(encoder, batch["input_ids"], pad_id))
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE)
        if head.training:  # outputs are for scoring: none while training (no copy to the CPU, no wait for a GPU)
            return StepOutput(loss, {})
        lengths = (batch["input_ids"] != pad_id).sum(-1).tolist()
        predicted = logits.argmax(-1).cpu()
        return StepOutput(loss, {"predicted": [row[:n].tolist() for row, n in zip(predicted, lengths)]})

    def predict(self, outputs, eval_set, labels):
        predicted = [row for o in outputs for row in o["predicted"]]
        fallback = labels.index("O") if "O" in labels else 0
        # whole columns at once: a datasets.Dataset read row by row costs ~10 us a row
        examples = eval_set.examples.select_columns(["tokens", "tags"]).to_dict()
        word_indices = eval_set.features.select_columns(["word_index"]).to_dict()["word_index"]
        records = []
        for index, (row, word_index, tokens, tags) in enumerate(zip(predicted, word_indices, examples["tokens"],
                                                                    examples["tags"])):
            words = words_from_subtokens(row, word_index, len(tags), fallback)
            gold, prediction = [labels[t] for t in tags], [labels[t] for t in words]
            records.append({"index": index, "input": tokens, "gold": gold, "prediction": prediction,
                            "correct": gold == prediction})
        return records

    def score_predictions(self, records, task, lang):
        gold, predicted = [r["gold"] for r in records], [r["prediction"] for r in records]
        if task.metric == "accuracy":
            return token_accuracy(gold, predicted)
        return tag_scores(gold, predicted, task.seqeval)


FORMAT = Tagging()
