"""The Lightning module: an encoder, a head, and the format that joins them; AdamW with linear warm-up/decay.

Every evaluation set (one per language and split, from the datamodule) is scored by its format as
`<split>/<lang>/<metric>`, with `<split>/mean/<metric>` over all its languages and `<split>/zero_shot_mean/<metric>`
over all but the training language. Perturbed copies and adversarial sets (`test.typos`, `test.anli_plus`) are
scored the same way, and their drop from the clean score is `robustness/<variant>/<lang>/<metric>_drop`. Validation
scores go to Lightning's logger (the checkpoint callback selects on them); the test's are left in `final_scores`
for the caller to record in one call (through Lightning, hundreds of values cost a second).
Scores come from the format's per-example predictions; after the final evaluation (test), `on_predictions`, when
given, receives each set's predictions (lightning_modules/predictions.py writes them).
"""

from __future__ import annotations

from collections import defaultdict
from statistics import mean

import lightning as L
import torch
from transformers import get_linear_schedule_with_warmup

from lightning_modules.metrics.robustness import robustness_drops


NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "LayerNorm.bias")


def mean_scores(scores_by_lang: dict[str, dict[str, float]], train_language: str) -> dict[str, float]:
    """Per metric: the mean over languages, and the mean over the zero-shot (non-training) languages."""
    means = {}
    zero_shot = {lang: s for lang, s in scores_by_lang.items() if lang != train_language}
    for name, group in (("mean", scores_by_lang), ("zero_shot_mean", zero_shot)):
        for metric in next(iter(group.values()), {}):
            means[f"{name}/{metric}"] = mean(s[metric] for s in group.values())
    return means


def exact(scores: dict[str, float]) -> dict[str, torch.Tensor]:
    """Scores as float64 tensors: a plain float would be logged as float32, a few digits off what the predictions
    on disk score to."""
    return {key: torch.tensor(float(value), dtype=torch.float64) for key, value in scores.items()}


def group_share(batch: dict, accumulate: int) -> float:
    """The factor that makes a batch's mean loss its part of its accumulation group's mean over all the group's
    units (tokens for tagging and masked LM, else examples), once Lightning has divided it by `accumulate`:
    micro-batches of 4 accumulated 8 times then give the gradient of one batch of 32. 1 without accumulation, and
    for batches that do not carry their units (a stream): there each batch's mean counts alike."""
    if "group_units" not in batch or not batch["group_units"]:
        return 1.0
    return batch["units"] * accumulate / batch["group_units"]


class TaskModule(L.LightningModule):
    def __init__(self, encoder, head, fmt, labels: list[str] | None, pad_id: int, optimizer=None,
                 on_predictions=None):
        """`optimizer`: the run's training settings (lr, weight_decay, warmup_ratio, adam_epsilon: the TrainConfig
        of sweeps/config/schema.py); None for a module that only evaluates. `on_predictions(eval_set, records)`
        receives the final evaluation's per-example predictions."""
        super().__init__()
        self.on_predictions = on_predictions  # (EvalSet, records) -> None
        self.encoder, self.head = encoder, head
        self.fmt, self.labels, self.pad_id, self.optimizer_settings = fmt, labels, pad_id, optimizer
        self._outputs: dict[int, list] = defaultdict(list)
        self.scores: dict[str, float] = {}
        self.final_scores: dict[str, float] = {}  # the test's, for the caller to record (hundreds of values: one call)
        self.train()  # from_pretrained returns modules in eval mode, and Lightning keeps the mode it finds

    def on_save_checkpoint(self, checkpoint):
        """Frozen parameters (the embeddings under frozen_embeddings, the base under an adapter) never change: a
        Lightning checkpoint (selection, resume) leaves them out, and loading one takes them from the module."""
        state = checkpoint["state_dict"]
        for name in self._frozen():
            state.pop(name, None)

    def on_load_checkpoint(self, checkpoint):
        state = checkpoint["state_dict"]
        for name, parameter in self._frozen().items():
            state.setdefault(name, parameter.detach())

    def load_selected(self, checkpoint: dict) -> None:
        """The weights of a checkpoint this module saved (the selected best), frozen parameters included."""
        self.on_load_checkpoint(checkpoint)
        self.load_state_dict(checkpoint["state_dict"])

    def _frozen(self) -> dict:
        return {name: parameter for name, parameter in self.named_parameters() if not parameter.requires_grad}

    def training_step(self, batch, batch_idx):
        loss = self.fmt.step(self.encoder, self.head, batch, self.pad_id).loss
        # only on the steps the logger writes (every log_every_n_steps): self.log costs time on every call
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:
            self.log("train/loss", loss, on_step=True, prog_bar=True, batch_size=len(batch["input_ids"]))
        return loss * group_share(batch, self.trainer.accumulate_grad_batches)

    def _collect(self, batch, dataloader_idx: int) -> None:
        self._outputs[dataloader_idx].append(self.fmt.step(self.encoder, self.head, batch, self.pad_id).outputs)

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self._collect(batch, dataloader_idx)

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        self._collect(batch, dataloader_idx)

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            self._outputs.clear()
            return
        self._score(self.trainer.datamodule.selection_sets, final=False)

    def on_test_epoch_end(self):
        datamodule = self.trainer.datamodule
        final = self._score(datamodule.eval_sets)
        final.update(robustness_drops(self.scores, synthetic=datamodule.robustness.perturbations))
        self.scores.update(final)
        self.final_scores = final

    def _score(self, eval_sets, final: bool = True) -> dict[str, float]:
        by_split: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
        for index, eval_set in enumerate(eval_sets):
            outputs = self._outputs.pop(index, [])
            if eval_set.order is not None:  # batches grouped by length: back to the features' order
                outputs = self.fmt.in_data_order(outputs, eval_set.order)
            records = self.fmt.predict(outputs, eval_set, self.labels)
            if final and self.on_predictions is not None and self.fmt.per_example():
                self.on_predictions(eval_set, records)
            by_split[eval_set.split][eval_set.lang] = self.fmt.score_predictions(records, eval_set.task, eval_set.lang)
        scores = {}
        for split, by_lang in by_split.items():
            scores.update({f"{split}/{lang}/{metric}": value
                           for lang, result in by_lang.items() for metric, value in result.items()})
            train_language = eval_sets[0].task.train_language
            scores.update({f"{split}/{key}": value for key, value in mean_scores(by_lang, train_language).items()})
        scores.update(self.fmt.summary(scores, eval_sets))
        self._outputs.clear()
        self.scores.update(scores)
        if not final:  # the selection score, for the checkpoint callback and the logger
            self.log_dict(exact(scores))
        return scores

    def configure_optimizers(self):
        settings = self.optimizer_settings
        if settings is None:
            raise ValueError("this TaskModule was built for evaluation only: no optimizer settings")
        named = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        groups = [{"params": [p for n, p in named if not n.endswith(NO_DECAY)], "weight_decay": settings.weight_decay},
                  {"params": [p for n, p in named if n.endswith(NO_DECAY)], "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(groups, lr=settings.lr, eps=settings.adam_epsilon,
                                      fused=self.device.type in ("cuda", "cpu"))  # one kernel for all tensors
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        scheduler = get_linear_schedule_with_warmup(optimizer, int(total * settings.warmup_ratio), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
