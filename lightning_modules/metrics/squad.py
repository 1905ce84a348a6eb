"""SQuAD-style answer scores, as XTREME computes them for XQuAD, TyDiQA-GoldP (and SQuAD).

Matches `third_party/evaluate_squad.py` of google-research/xtreme (the SQuAD v1.1 script): answers are
lower-cased, stripped of ASCII punctuation and of the English articles a/an/the, and whitespace-tokenised
for every language; a question scores the best EM and the best F1 over its gold answers (maxed
separately); the corpus score is 100 x the mean over all reference questions, a missing prediction
counting 0.

Empty answers follow the v1.1 script too: F1 is the bag-of-tokens overlap, so a prediction and a gold
that both normalise to nothing (a gold such as "the") score F1 0 (and EM 1: both normalise to "").

SQuAD 2.0 (`squad_scores(..., no_answer=True)`, for tasks with unanswerable questions; official v2 script):
gold answers that normalise to nothing are dropped and a question left without gold answers counts as
gold [""]; the prediction "" means "no answer"; when either side has no tokens, F1 is 1 if both are empty
and 0 otherwise. Unlike the v2 script, unanswered questions still count 0 in the mean (as in v1 and XTREME).
"""

import re
import string
from collections import Counter
from typing import Callable, Mapping, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def overlap_f1(predicted_tokens: Sequence[str], gold_tokens: Sequence[str]) -> float:
    """Bag-of-tokens F1; 0 when nothing overlaps (including when either side is empty)."""
    common = sum((Counter(predicted_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(predicted_tokens)
    recall = common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str) -> float:
    """SQuAD v1.1 (XQuAD, TyDiQA): 0 when nothing overlaps, even when both sides are empty."""
    return overlap_f1(normalize_answer(prediction).split(), normalize_answer(gold).split())


def f1_v2(prediction: str, gold: str) -> float:
    """SQuAD 2.0: an empty side scores 1 only against another empty side."""
    predicted_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not predicted_tokens or not gold_tokens:
        return float(predicted_tokens == gold_tokens)
    return overlap_f1(predicted_tokens, gold_tokens)


def qa_corpus_scores(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]],
                     exact_match_fn: Callable[[str, str], float],
                     f1_fn: Callable[[str, str], float]) -> dict:
    """100 x mean over every reference question of its best EM and best F1 over the gold answers."""
    if not references:
        raise ValueError("no reference questions to score")
    em_total = f1_total = 0.0
    for question_id, golds in references.items():
        if question_id not in predictions:
            continue
        prediction = predictions[question_id]
        golds = list(golds) or [""]
        em_total += max(exact_match_fn(prediction, gold) for gold in golds)
        f1_total += max(f1_fn(prediction, gold) for gold in golds)
    return {"exact_match": 100.0 * em_total / len(references), "f1": 100.0 * f1_total / len(references)}


def _answerable_golds(golds: Sequence[str]) -> list[str]:
    return [gold for gold in golds if normalize_answer(gold)] or [""]


def squad_scores(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]],
                 no_answer: bool = False) -> dict:
    """{"exact_match", "f1"} x100 for question id -> predicted text and question id -> gold texts; SQuAD v1.1
    as XTREME scores it, or SQuAD 2.0 with `no_answer`."""
    if not no_answer:
        return qa_corpus_scores(predictions, references, exact_match, f1)
    golds = {question_id: _answerable_golds(texts) for question_id, texts in references.items()}
    return qa_corpus_scores(predictions, golds, exact_match, f1_v2)
