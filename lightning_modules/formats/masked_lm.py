"""Masked language modelling (the optional multilingual MLM phase): the encoder's own pretrained LM head,
tied to its input embeddings, predicts masked sub-tokens (or whole words); scored by perplexity."""

import math

import torch.nn.functional as F

from lightning_modules.formats.base import Format, StepOutput, encode
from lightning_modules.formats.spec import FormatSpec

EVAL_MASK_SEED = 0  # evaluation masks the same positions every time, so perplexities are comparable


SPEC = FormatSpec("masked_lm", fields={"text": "text"}, metrics={"perplexity": "min"})


class MaskedLM(Format):
    name = "masked_lm"

    def featurize(self, batch, tokenizer, task, settings, training):
        encoded = tokenizer(batch["text"], truncation=True, max_length=settings.max_length,
                            return_offsets_mapping=settings.whole_word_mask)
        features = {"input_ids": encoded["input_ids"]}
        if settings.whole_word_mask:
            features["offset_mapping"] = encoded["offset_mapping"]
        return features

    def collator(self, tokenizer, settings, training):
        from transformers import DataCollatorForLanguageModeling

        masker = DataCollatorForLanguageModeling(tokenizer, mlm_probability=settings.mlm_probability,
                                                 whole_word_mask=settings.whole_word_mask,
                                                 seed=None if training else EVAL_MASK_SEED)

        def collate(rows):  # pad ourselves: the library pads input_ids but not the offsets whole-word masking reads
            width = max(len(r["input_ids"]) for r in rows)
            padded = [{"input_ids": r["input_ids"] + [tokenizer.pad_token_id] * (width - len(r["input_ids"]))}
                      for r in rows]
            if settings.whole_word_mask:
                for row, out in zip(rows, padded):
                    out["offset_mapping"] = row["offset_mapping"] + [[0, 0]] * (width - len(row["offset_mapping"]))
            return masker(padded)
        return collate

    def loss_units(self, batch):
        return int((batch["labels"] != -100).sum())

    def build_head(self, encoder, task, labels):
        from transformers import AutoModelForMaskedLM

        with_head = AutoModelForMaskedLM.from_pretrained(encoder.name_or_path)
        head = next(module for name, module in with_head.named_children() if name != with_head.base_model_prefix)
        with_head.get_output_embeddings().weight = encoder.get_input_embeddings().weight
        return head

    def step(self, encoder, head, batch, pad_id):
        logits = head(encode(encoder, batch["input_ids"], pad_id)).float()
        labels = batch["labels"]
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        if head.training:  # outputs are for scoring: none while training (no copy to the CPU, no wait for a GPU)
            return StepOutput(loss, {})
        tokens = int((labels != -100).sum())
        return StepOutput(loss, {"loss_sum": float(loss) * tokens, "tokens": tokens})

    def per_example(self) -> bool:
        return False

    def predict(self, outputs, eval_set, labels):
        return outputs  # per batch: masked tokens and their summed loss

    def score_predictions(self, records, task, lang):
        tokens = sum(o["tokens"] for o in records)
        loss = sum(o["loss_sum"] for o in records) / max(tokens, 1)
        return {"perplexity": math.exp(loss), "loss": loss}


FORMAT = MaskedLM()
