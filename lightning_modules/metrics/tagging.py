"""Tagging scores: entity/chunk F1 for PAN-X and UD-POS as XTREME computes them, token accuracy for CCG.

XTREME (`third_party/run_tag.py`, `evaluate.py`) scores both PAN-X and UD-POS with seqeval's default
(conlleval-like, lenient) `precision_score` / `recall_score` / `f1_score`: micro-averaged over chunks,
over word-level tags (one per word: the label of its first sub-token). Chunks are runs that seqeval
reads from the tags: an entity must match in type, start and end, so a prediction cut short at a
word boundary (B-PER where gold is B-PER I-PER) is a wrong entity, and an I- tag after O opens one.

This module uses seqeval 1.2.2 (pinned by the project). For POS tags, which carry no B-/I- prefix,
seqeval takes the first letter as the chunk tag, so runs of one tag merge into one chunk (NOUN NOUN is
a single chunk) in every version; the 1.x releases differ from the 0.0.x ones, which XTREME's own
expected values come from, in the chunk type:
  * 0.0.x uses the whole tag as type; 1.x drops the first letter, so CCONJ and SCONJ share the type
    "CONJ": one predicted for the other counts as correct, and a CCONJ right before an SCONJ is lost
    (SCONJ's "S" opens a chunk without closing the same-typed one before it);
  * X gets the type "_", the same as the "O" seqeval inserts after every sentence, so an X chunk that
    ends a sentence is never closed and disappears.
On XTREME's mock test data (`mock_test_data/{labels,predictions}/udpos`, 33 languages) seqeval 0.0.12
gives the repository's expected mean F1 70.2175 (precision 71.0223, recall 69.5498); 1.2.2 gives 70.3981.
PAN-X (IOB2 tags) is unaffected.
"""

import warnings
from typing import Sequence

from seqeval.metrics import f1_score, precision_score, recall_score


def _check_aligned(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> None:
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    for index, (gold_tags, predicted_tags) in enumerate(zip(gold, predicted)):
        if len(gold_tags) != len(predicted_tags):
            raise ValueError(f"sentence {index}: {len(gold_tags)} gold tags but {len(predicted_tags)} predicted")


def tag_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict:
    """{"f1", "precision", "recall"} x100 over sentences of word-level tags (seqeval 1.2.2, default mode)."""
    _check_aligned(gold, predicted)
    gold, predicted = [list(tags) for tags in gold], [list(tags) for tags in predicted]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*seems not to be NE tag")
        scores = {name: metric(gold, predicted, zero_division=0) for name, metric in
                  (("f1", f1_score), ("precision", precision_score), ("recall", recall_score))}
    return {name: 100.0 * float(value) for name, value in scores.items()}


def token_accuracy(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict:
    """{"accuracy"} x100: the share of tokens whose tag is right (CCG supertagging)."""
    _check_aligned(gold, predicted)
    pairs = [(g, p) for gold_tags, predicted_tags in zip(gold, predicted) for g, p in zip(gold_tags, predicted_tags)]
    if not pairs:
        raise ValueError("no tokens to score")
    return {"accuracy": 100.0 * sum(g == p for g, p in pairs) / len(pairs)}
