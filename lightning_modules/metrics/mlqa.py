"""MLQA answer scores with MLQA's language-specific normalisation (XTREME `third_party/evaluate_mlqa.py`,
i.e. facebookresearch/MLQA `mlqa_evaluation_v1.py`).

Normalisation, in the official order: lower-case; drop every Unicode punctuation character (category P*)
and ASCII `string.punctuation` (which adds symbols such as $ + < = > ^ ` | ~); remove the language's
articles; tokenise. Articles: en a/an/the; es un/una/unos/unas/el/la/los/las; de ein/eine/einen/einem/
eines/einer/der/die/das/den/dem/des; vi của/là/cái/chiếc/những (all as whole words); ar: every occurrence
of "ال", even inside a word (the official pattern's other branch can never match); hi and zh: none.
Tokens: whitespace for en es de vi hi ar; zh uses mixed segmentation, where each CJK ideograph
(U+4E00..U+9FA5) is a token of its own and the text between them is split on whitespace.
Scores follow the SQuAD v1 script: F1 is 0 when nothing overlaps, even if both answers are empty.
"""

import re
import string
import unicodedata
from functools import partial
from typing import Mapping, Sequence

from lightning_modules.metrics.squad import overlap_f1, qa_corpus_scores

_ARTICLES = {
    "en": re.compile(r"\b(a|an|the)\b"),
    "es": re.compile(r"\b(un|una|unos|unas|el|la|los|las)\b"),
    "de": re.compile(r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b"),
    "vi": re.compile(r"\b(của|là|cái|chiếc|những)\b"),
    "ar": re.compile("ال"),
    "hi": None,
    "zh": None,
}
MLQA_LANGUAGES = tuple(_ARTICLES)
_MIXED_SEGMENTATION = {"zh"}


def _is_punctuation(ch: str) -> bool:
    return ch in string.punctuation or unicodedata.category(ch).startswith("P")


def _is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fa5"


def mixed_segmentation(text: str) -> list[str]:
    tokens, pending = [], ""
    for ch in text:
        if _is_cjk(ch) or _is_punctuation(ch):
            tokens += pending.split() + [ch]
            pending = ""
        else:
            pending += ch
    return tokens + pending.split()


def _check_language(lang: str) -> None:
    if lang not in _ARTICLES:
        raise ValueError(f"MLQA normalisation is defined for {', '.join(MLQA_LANGUAGES)}; got {lang!r}")


def normalize_answer(text: str, lang: str) -> str:
    _check_language(lang)
    text = "".join(ch for ch in text.lower() if not _is_punctuation(ch))
    if _ARTICLES[lang] is not None:
        text = _ARTICLES[lang].sub(" ", text)
    tokens = mixed_segmentation(text) if lang in _MIXED_SEGMENTATION else text.split()
    return " ".join(tokens)


def exact_match(prediction: str, gold: str, lang: str) -> float:
    return float(normalize_answer(prediction, lang) == normalize_answer(gold, lang))


def f1(prediction: str, gold: str, lang: str) -> float:
    return overlap_f1(normalize_answer(prediction, lang).split(), normalize_answer(gold, lang).split())


def mlqa_scores(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]], lang: str) -> dict:
    """{"exact_match", "f1"} x100; `lang` is the language of the answers (the MLQA context language)."""
    _check_language(lang)
    return qa_corpus_scores(predictions, references, partial(exact_match, lang=lang), partial(f1, lang=lang))
