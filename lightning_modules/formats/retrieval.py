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
MAP_K = 20


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

    def predict(self, outputs, eval_set, labels):
        task, examples = eval_set.task, eval_set.examples
        parts = examples["part"] if "part" in examples.column_names else None
        if "side" in examples.column_names:
            embeddings = torch.cat([o["embedding"] for o in outputs])
            pools = {part: _pool(examples, embeddings, parts, part) for part in ("calibration", "eval")} \
                if parts else {"eval": _pool(examples, embeddings, None, None)}
        else:
            source, target = (torch.cat([o[side] for o in outputs]) for side in self.sides)
            texts = {side: examples[side] for side in self.sides}
            pools = {part: _pairs(source, target, parts, part, texts) for part in ("calibration", "eval")} \
                if parts else {"eval": _pairs(source, target, None, None, texts)}
        if task.metric == "accuracy":
            return _nearest(pools["eval"])
        if task.metric == "map_at_20":
            return _rankings(pools["eval"])
        return _mined(pools)

    def score_predictions(self, records, task, lang):
        if task.metric == "accuracy":  # Tatoeba: a hit is the aligned row (index)
            return {name: 100.0 * (sum(r[column] == r["index"] for r in records) / len(records))
                    for name, column in (("accuracy", "prediction"), ("accuracy_xx_to_en", "prediction_xx_to_en"))}
        if task.metric == "map_at_20":
            return {"map_at_20": 100.0 * sum(r["average_precision"] for r in records) / len(records)}
        return _mining_scores(records)


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


def _pairs(source, target, parts, part, texts) -> dict:
    """Aligned pairs as a pool: row i of the source side is gold with row i of the target side. Texts are kept for
    display only: repeated sentences are not merged as in a pool of the official files."""
    chosen = [i for i in range(len(source)) if parts is None or parts[i] == part]
    rows = torch.tensor(chosen, dtype=torch.long)
    ids = list(range(len(rows)))
    return {"source": {"embeddings": source[rows], "ids": ids, "texts": None,
                       "shown": [texts["source"][i] for i in chosen]},
            "target": {"embeddings": target[rows], "ids": ids, "texts": None,
                       "shown": [texts["target"][i] for i in chosen]},
            "gold": list(zip(ids, ids))}


def _shown(side: dict) -> list[str]:
    return side.get("shown") or side["texts"]


def _nearest(pool) -> list[dict]:
    """Tatoeba: per aligned pair i, the row retrieved in XTREME's direction (the English sentence, `target`,
    queries the other side) and in the reverse one."""
    source, target = pool["source"]["embeddings"], pool["target"]["embeddings"]
    if len(source) != len(target):
        raise ValueError(f"{len(source)} source but {len(target)} target sentences")
    en_to_xx = metrics.knn(target, source, 1)[1][:, 0].cpu().tolist()
    xx_to_en = metrics.knn(source, target, 1)[1][:, 0].cpu().tolist()
    sources, targets = _shown(pool["source"]), _shown(pool["target"])
    return [{"index": i, "input": targets[i], "gold": i, "prediction": j, "expected": sources[i],
             "retrieved": sources[j], "prediction_xx_to_en": k, "correct": i == j}
            for i, (j, k) in enumerate(zip(en_to_xx, xx_to_en))]


def _mine(pool) -> list[tuple]:
    source, target = pool["source"], pool["target"]
    return metrics.bucc_mine(source["embeddings"], target["embeddings"], source["ids"], target["ids"],
                             src_texts=source["texts"], tgt_texts=target["texts"])


def _mined(pools: dict) -> list[dict]:
    """BUCC: every mined candidate pair of each part with its margin score, and every gold pair never mined
    (score None). `prediction` marks the pairs a submission lists: those at or above the threshold chosen on the
    calibration part (on the part itself when there is none)."""
    records = []
    for part in sorted(pools, key=lambda name: name != "eval"):  # the scored part first
        pool = pools[part]
        gold = set(pool["gold"])
        source = dict(zip(pool["source"]["ids"], _shown(pool["source"])))
        target = dict(zip(pool["target"]["ids"], _shown(pool["target"])))
        candidates = _mine(pool)
        mined = {(s, t) for s, t, _ in candidates}
        rows = [*candidates, *((s, t, None) for s, t in dict.fromkeys(pool["gold"]) if (s, t) not in mined)]
        records += [{"part": part, "source_id": str(s), "target_id": str(t), "input": source.get(s),
                     "retrieved": target.get(t), "score": score, "gold": (s, t) in gold} for s, t, score in rows]
    threshold = _threshold(records, "calibration" if "calibration" in pools else "eval")
    for record in records:
        record["prediction"] = record["score"] is not None and record["score"] >= threshold
        record["correct"] = record["prediction"] == record["gold"]
    return records


def _part(records, part: str) -> tuple[list[tuple], list[tuple]]:
    """(candidates (source id, target id, score), gold pairs) of one part of mining records."""
    chosen = [r for r in records if r["part"] == part]
    candidates = [(r["source_id"], r["target_id"], r["score"]) for r in chosen if r["score"] is not None]
    return candidates, [(r["source_id"], r["target_id"]) for r in chosen if r["gold"]]


def _threshold(records, part: str) -> float:
    return metrics.bucc_threshold(*_part(records, part))


def _mining_scores(records) -> dict:
    candidates, gold = _part(records, "eval")
    own = metrics.bucc_threshold(candidates, gold)
    own_scores = {f"{name}{OWN}": value for name, value in metrics.bucc_scores(candidates, gold, own).items()}
    if not any(r["part"] == "calibration" for r in records):
        return {**own_scores, "threshold": own}
    threshold = _threshold(records, "calibration")
    scores = metrics.bucc_scores(candidates, gold, threshold)
    return {**scores, "threshold": threshold, f"f1{OWN}": own_scores[f"f1{OWN}"]}


def _rankings(pool) -> list[dict]:
    """LAReQA, Mewsli-X: per query with a gold candidate, the 20 best candidates and its AP@20."""
    gold: dict = {}
    for source_id, target_id in pool["gold"]:
        gold.setdefault(source_id, []).append(target_id)
    queries, candidates = pool["source"], pool["target"]
    scored = [i for i, query_id in enumerate(queries["ids"]) if gold.get(query_id)]
    if not scored:
        raise ValueError("no query has a gold candidate")
    _, nearest = metrics.knn(queries["embeddings"][torch.tensor(scored, dtype=torch.long)], candidates["embeddings"],
                             MAP_K)
    texts = _shown(queries)
    records = []
    for i, row in zip(scored, nearest.cpu().tolist()):
        ranked = [candidates["ids"][j] for j in row]
        query_gold = gold[queries["ids"][i]]
        records.append({"query_id": str(queries["ids"][i]), "input": texts[i], "gold": [str(g) for g in query_gold],
                        "prediction": [str(c) for c in ranked], "correct": ranked[0] in query_gold,
                        "average_precision": metrics.average_precision_at_k(query_gold, ranked, MAP_K)})
    return records


FORMAT = Retrieval()
