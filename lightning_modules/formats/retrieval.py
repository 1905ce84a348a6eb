"""Sentence retrieval (Tatoeba, BUCC): evaluation only. Each sentence is embedded by masked mean pooling of a
middle layer (lightning_modules/metrics/retrieval.py: retrieval_layer) and matched by cosine similarity."""

import torch

from lightning_modules.formats.base import Format, StepOutput, encode, pad
from lightning_modules.metrics import retrieval as metrics


class Retrieval(Format):
    name = "retrieval"
    sides = ("source", "target")

    def trains(self) -> bool:
        return False

    def featurize(self, batch, tokenizer, task, settings, training):
        return {f"{side}_input_ids": tokenizer(batch[side], truncation=True, max_length=settings.max_length)["input_ids"]
                for side in self.sides}

    def collate(self, rows, tokenizer):
        return {f"{side}_input_ids": pad([r[f"{side}_input_ids"] for r in rows], tokenizer.pad_token_id)
                for side in self.sides}

    def build_head(self, encoder, task, labels):
        return torch.nn.Identity()

    def step(self, encoder, head, batch, pad_id):
        layer = metrics.retrieval_layer(encoder.config.num_hidden_layers)
        outputs = {}
        for side in self.sides:
            input_ids = batch[f"{side}_input_ids"]
            hidden = encode(encoder, input_ids, pad_id, hidden_layer=layer)
            outputs[side] = metrics.mean_pool(hidden, input_ids != pad_id).float().cpu()
        return StepOutput(None, outputs)

    def score(self, outputs, eval_set, labels):
        source, target = (torch.cat([o[side] for o in outputs]) for side in self.sides)
        if eval_set.task.metric == "accuracy":  # XTREME's direction (English queries), and the reverse
            reverse = metrics.tatoeba_accuracy(source, target, direction="xx->en")["accuracy"]
            return {**metrics.tatoeba_accuracy(source, target), "accuracy_xx_to_en": reverse}
        ids = list(range(len(source)))
        gold = set(zip(ids, ids))
        candidates = metrics.bucc_mine(source, target, ids, ids)
        threshold = metrics.bucc_threshold(candidates, gold)
        return {**metrics.bucc_scores(candidates, gold, threshold), "threshold": threshold}


FORMAT = Retrieval()
