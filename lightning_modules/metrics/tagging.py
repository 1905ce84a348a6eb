"""Tagging scores: entity/chunk F1 for PAN-X and UD-POS as XTREME computes them, token accuracy for CCG.

XTREME (`third_party/run_tag.py`, `evaluate.py`) scores both PAN-X and UD-POS with seqeval's default
(conlleval-like, lenient) `precision_score` / `recall_score` / `f1_score`: micro-averaged over chunks,
over word-level tags (one per word: the label of its first sub-token). Chunks are runs that seqeval
reads from the tags: an entity must match in type, start and end, so a prediction cut short at a
word boundary (B-PER where gold is B-PER I-PER) is a wrong entity, and an I- tag after O opens one.

Two behaviours of seqeval, `scheme`:
  * "0.0" (default): seqeval 0.0.x, which XTREME's published numbers, leaderboard and expected values come
    from, implemented here (`chunks_seqeval_0_0`);
  * "1.x": the installed seqeval (1.2.2, pinned by the project), default mode.
For POS tags, which carry no B-/I- prefix, seqeval takes the first letter as the chunk tag, so runs of one
tag merge into one chunk (NOUN NOUN is a single chunk) in every version; 1.x differs from 0.0.x in the
chunk type:
  * 0.0.x uses the whole tag as type; 1.x drops the first letter, so CCONJ and SCONJ share the type
    "CONJ": one predicted for the other counts as correct, and a CCONJ right before an SCONJ is lost
    (SCONJ's "S" opens a chunk without closing the same-typed one before it);
  * X gets the type "_", the same as the "O" seqeval inserts after every sentence, so an X chunk that
    ends a sentence is never closed and disappears.
On XTREME's mock test data (`mock_test_data/{labels,predictions}/udpos`, 33 languages) seqeval 0.0.12
gives the repository's expected mean F1 70.2175 (precision 71.0223, recall 69.5498); 1.2.2 gives 70.3981.
IOB2 tags (PAN-X) get the same chunks from both.

Token accuracy (`accuracy`) is reported beside the chunk scores: the share of words tagged right, the number
POS tagging is usually quoted with outside XTREME.
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


SCHEMES = ("0.0", "1.x")
# seqeval 0.0.x's chunk boundaries, by the first letter of the previous and the current tag
_ALWAYS_CLOSES = frozenset("ES")  # a chunk ends after any E- or S- tag
_CLOSING = frozenset({("B", "B"), ("B", "S"), ("B", "O"), ("I", "B"), ("I", "S"), ("I", "O")})
_ALWAYS_OPENS = frozenset("BS")
_OPENING = frozenset({("E", "E"), ("E", "I"), ("S", "E"), ("S", "I"), ("O", "E"), ("O", "I")})
_OUTSIDE = frozenset("O.")  # tags that neither close nor open a chunk by a change of type


def chunks_seqeval_0_0(sentences: Sequence[Sequence[str]]) -> set[tuple[str, int, int]]:
    """The (type, first, last) chunks seqeval 0.0.x reads from sentences of tags: the sentences are joined with
    an "O" after each; a tag's prefix is its first letter and its type what follows its last "-" (the whole
    tag when it has none); a chunk closes or opens where the prefixes say so or where the type changes."""
    tags = [tag for sentence in sentences for tag in (*sentence, "O")] + ["O"]
    chunks, start, prefix, kind = set(), 0, "O", ""
    for position, tag in enumerate(tags):
        next_prefix, next_kind = tag[0], tag.rsplit("-", 1)[-1]
        changes_type = kind != next_kind
        if prefix in _ALWAYS_CLOSES or (prefix, next_prefix) in _CLOSING or (prefix not in _OUTSIDE and changes_type):
            chunks.add((kind, start, position - 1))
        if next_prefix in _ALWAYS_OPENS or (prefix, next_prefix) in _OPENING or \
                (next_prefix not in _OUTSIDE and changes_type):
            start = position
        prefix, kind = next_prefix, next_kind
    return chunks


def _percentages(correct: int, predicted: int, gold: int) -> dict:
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": 100.0 * f1, "precision": 100.0 * precision, "recall": 100.0 * recall}


def chunk_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], scheme: str = "0.0") -> dict:
    """{"f1", "precision", "recall"} x100 over sentences of word-level tags, micro-averaged over chunks."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown seqeval scheme {scheme!r}; valid: {', '.join(SCHEMES)}")
    _check_aligned(gold, predicted)
    if scheme == "0.0":
        gold_chunks, predicted_chunks = chunks_seqeval_0_0(gold), chunks_seqeval_0_0(predicted)
        return _percentages(len(gold_chunks & predicted_chunks), len(predicted_chunks), len(gold_chunks))
    gold, predicted = [list(tags) for tags in gold], [list(tags) for tags in predicted]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*seems not to be NE tag")
        scores = {name: metric(gold, predicted, zero_division=0) for name, metric in
                  (("f1", f1_score), ("precision", precision_score), ("recall", recall_score))}
    return {name: 100.0 * float(value) for name, value in scores.items()}


def tag_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], scheme: str = "0.0") -> dict:
    """The chunk scores (`chunk_scores`) and, where there is a word, token `accuracy`."""
    scores = chunk_scores(gold, predicted, scheme)
    if any(gold):
        scores.update(token_accuracy(gold, predicted))
    return scores


def token_accuracy(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict:
    """{"accuracy"} x100: the share of tokens whose tag is right (CCG supertagging)."""
    _check_aligned(gold, predicted)
    pairs = [(g, p) for gold_tags, predicted_tags in zip(gold, predicted) for g, p in zip(gold_tags, predicted_tags)]
    if not pairs:
        raise ValueError("no tokens to score")
    return {"accuracy": 100.0 * sum(g == p for g, p in pairs) / len(pairs)}
