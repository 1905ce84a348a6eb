"""Sentence retrieval (Tatoeba, BUCC, LAReQA, Mewsli-X): evaluation only. Each text is embedded by masked mean
pooling of a middle layer (lightning_modules/metrics/retrieval.py: retrieval_layer) and matched by cosine.

Rows come in two shapes (datamodules/pools.py): aligned pairs (`source`, `target`: row i of one side translates
row i of the other; Tatoeba, the hub's BUCC gold pairs) or a pool (`side`, `id`, `text`, `gold`: queries and
candidates of any number; the official BUCC files with their distractors, LAReQA, Mewsli-X).

Scores by the task's metric:

* accuracy: Tatoeba nearest-neighbour accuracy, XTREME's direction (English queries) and the reverse.
* f1: BUCC bitext mining (ratio margin, k = 4). The score threshold is the one with the best F1 on the labelled
  `calibration_split` (BUCC's "sample"/dev split), mined with the same encoder, and it is applied to the split
  scored, as XTREME does: `f1`, `precision`, `recall` at that `threshold`. The calibration split itself can only
  be scored with its own best threshold, an optimistic score, so its numbers are named `f1_own_threshold`,
  `precision_own_threshold`, `recall_own_threshold` (with that `threshold`); a scored split also reports its
  `f1_own_threshold` for comparison. A task without a calibration split gets only the `*_own_threshold` names.
* map_at_20: mean average precision over the top 20 candidates (LAReQA; for Mewsli-X, with one gold entity per
  mention, it is the mean reciprocal rank at 20 that XTREME-R reports).
"""

import torch

from lightning_modules.formats.base import Format, StepOutput, encode, pad
from lightning_modules.formats.spec import FormatSpec
from lightning_modules.metrics import retrieval as metrics

OWN = "_own_threshold"


SPEC = FormatSpec("retrieval", fields={"source": "text", "target": "text"},
                  metrics={"accuracy": "max", "f1": "max", "map_at_20": "max"}, input_fields=("source",), trains=False)


class Retrieval(Format):
    name = "retrieval"
    sides = ("source", "target")

    def featurize(self, batch, tokenizer, task, settings, training):
        if "side" in batch:  # a pool: one text per row
            return {"input_ids": tokenizer(batch["text"], truncation=True, max_length=settings.max_length)["input_ids"]}
        return {f"{side}_input_ids": tokenizer(batch[side], truncation=True, max_length=settings.max_length)["input_ids"]
                for side in self.sides}

    def _columns(self, keys) -> list[str]:
        return ["input_ids"] if "input_ids" in keys else [f"{side}_input_ids" for side in self.sides]

    def collate(self, rows, tokenizer):
        return {column: pad([r[column] for r in rows], tokenizer.pad_token_id) for column in self._columns(rows[0])}

    def build_head(self, encoder, task, labels):
        return torch.nn.Identity()

    def step(self, encoder, head, batch, pad_id):
        layer = metrics.retrieval_layer(encoder.config.num_hidden_layers)
        outputs = {}
        for column in self._columns(batch):
            input_ids = batch[column]
            hidden = encode(encoder, input_ids, pad_id, hidden_layer=layer)
            name = "embedding" if column == "input_ids" else column.removesuffix("_input_ids")
            outputs[name] = metrics.mean_pool(hidden, input_ids != pad_id).float().cpu()
        return StepOutput(None, outputs)

    def score(self, outputs, eval_set, labels):
        task, examples = eval_set.task, eval_set.examples
        parts = examples["part"] if "part" in examples.column_names else None
        if "side" in examples.column_names:
            embeddings = torch.cat([o["embedding"] for o in outputs])
            pools = {part: _pool(examples, embeddings, parts, part) for part in ("calibration", "eval")} \
                if parts else {"eval": _pool(examples, embeddings, None, None)}
        else:
            source, target = (torch.cat([o[side] for o in outputs]) for side in self.sides)
            pools = {part: _pairs(source, target, parts, part) for part in ("calibration", "eval")} \
                if parts else {"eval": _pairs(source, target, None, None)}
        if task.metric == "accuracy":
            return _tatoeba(pools["eval"])
        if task.metric == "map_at_20":
            return {"map_at_20": metrics.mean_average_precision_at_k(*_ranking(pools["eval"]), k=20)}
        return _mining(pools)


def _pool(examples, embeddings, parts, part) -> dict:
    """Sources and targets of one part of a pool: embeddings, ids, texts and gold pairs."""
    rows = [i for i in range(len(examples)) if parts is None or parts[i] == part]
    sides, ids, texts, gold = (examples[c] for c in ("side", "id", "text", "gold"))
    pool = {}
    for side in ("source", "target"):
        chosen = [i for i in rows if sides[i] == side]
        pool[side] = {"embeddings": embeddings[chosen], "ids": [ids[i] for i in chosen],
                      "texts": [texts[i] for i in chosen]}
    pool["gold"] = [(ids[i], g) for i in rows if sides[i] == "source" for g in gold[i]]
    return pool


def _pairs(source, target, parts, part) -> dict:
    """Aligned pairs as a pool: row i of the source side is gold with row i of the target side."""
    rows = torch.tensor([i for i in range(len(source)) if parts is None or parts[i] == part], dtype=torch.long)
    ids = list(range(len(rows)))
    return {"source": {"embeddings": source[rows], "ids": ids, "texts": None},
            "target": {"embeddings": target[rows], "ids": ids, "texts": None}, "gold": list(zip(ids, ids))}


def _tatoeba(pool) -> dict:
    source, target = pool["source"]["embeddings"], pool["target"]["embeddings"]
    reverse = metrics.tatoeba_accuracy(source, target, direction="xx->en")["accuracy"]
    return {**metrics.tatoeba_accuracy(source, target), "accuracy_xx_to_en": reverse}


def _mine(pool) -> list[tuple]:
    source, target = pool["source"], pool["target"]
    return metrics.bucc_mine(source["embeddings"], target["embeddings"], source["ids"], target["ids"],
                             src_texts=source["texts"], tgt_texts=target["texts"])


def _mining(pools: dict) -> dict:
    candidates = _mine(pools["eval"])
    own = metrics.bucc_threshold(candidates, pools["eval"]["gold"])
    own_scores = {f"{name}{OWN}": value for name, value in
                  metrics.bucc_scores(candidates, pools["eval"]["gold"], own).items()}
    if "calibration" not in pools:
        return {**own_scores, "threshold": own}
    threshold = metrics.bucc_threshold(_mine(pools["calibration"]), pools["calibration"]["gold"])
    scores = metrics.bucc_scores(candidates, pools["eval"]["gold"], threshold)
    return {**scores, "threshold": threshold, f"f1{OWN}": own_scores[f"f1{OWN}"]}


def _ranking(pool):
    """(query embeddings, candidate embeddings, gold candidate ids per query, candidate ids)."""
    gold: dict = {}
    for source_id, target_id in pool["gold"]:
        gold.setdefault(source_id, []).append(target_id)
    queries = pool["source"]
    return (queries["embeddings"], pool["target"]["embeddings"], [gold.get(i, []) for i in queries["ids"]],
            pool["target"]["ids"])


FORMAT = Retrieval()
