"""Perturbed copies of evaluation sets, for robustness evaluation: the same examples with noisier input text.

Four perturbations, each deterministic given a seed (every example, field and language draws from its own
generator, seeded by a string, so the result does not depend on the order or the process):

* `typos`: character noise in a share of the words (swap two adjacent letters, drop one, insert a keyboard
  neighbour, or replace one with a keyboard neighbour); words with digits (years, numbers) are left alone.
* `word_order`: local shuffles: words reordered inside windows of three; sentence-final punctuation stays last.
* `casing`: words upper-cased, lower-cased or capitalized.
* `code_switch`: words replaced by their translation into another language (one per example, drawn at random
  among those the dictionary pairs with the example's language) from a multilingual dictionary: the
  built-in English <-> German/French/Spanish one (datamodules/dictionaries/en-de-fr-es.json), or a user's (the
  same JSON layout, or MUSE-style `source target` lines in a file named `<src>-<tgt>[.anything].txt`). Words of a
  language the dictionary lacks stay as they are.

Each perturbation changes at least one word of a text that has a word it can change. Only input text is perturbed,
never labels: classification both sentences; multiple choice the context and every choice; span QA the question
only (the context keeps its answer spans valid); tagging each token on its own (one token in, one token out, so
the tags stay aligned; word_order does not apply); retrieval pairs the source (query) side (pools do not apply).

A perturbed copy of the evaluation split `test` is named `test.typos` (MLflow names allow no `~`), so its scores
land as `test.typos/<lang>/<metric>`. An adversarial set (another registered task of the same format and labels,
e.g. ANLI for an NLI model) is named `test.anli_plus` the same way. `robustness_drops` (lightning_modules/metrics/
robustness.py) turns the scores into
`robustness/<perturbation>/<lang>/<metric>_drop` = clean - perturbed (perturbed - clean for perplexity), with the
mean over languages and, over the synthetic perturbations, `robustness/mean/<metric>_drop`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from datamodules.tasks import TaskError
from lightning_modules.formats import get_spec
from lightning_modules.metrics.robustness import perturbed_split

PERTURBATIONS = ("typos", "word_order", "casing", "code_switch")
# share of the words changed (word_order: of the windows shuffled)
RATES = {"typos": 0.3, "word_order": 0.5, "casing": 0.5, "code_switch": 0.5}
WINDOW = 3  # word_order: words move inside windows of this many words
PERTURB_VERSION = 1  # bump when a perturbation changes, to invalidate cached perturbed features
BUILTIN_DICTIONARY = Path(__file__).with_name("dictionaries") / "en-de-fr-es.json"

_SPACE = re.compile(r"(\s+)")
_CORE = re.compile(r"^(\W*)(.*?)(\W*)$", re.S)
_FINAL_PUNCTUATION = re.compile(r"[.!?。！？]+$")
_KEYBOARD = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


# ---------------------------------------------------------------------------------------------- names and checks

def check_perturbations(names) -> tuple[str, ...]:
    unknown = [n for n in names if n not in PERTURBATIONS]
    if unknown:
        raise TaskError(f"unknown perturbation(s) {', '.join(unknown)}; valid: {', '.join(PERTURBATIONS)}")
    if len(set(names)) != len(names):
        raise TaskError(f"perturbations listed twice: {', '.join(names)}")
    return tuple(names)


def unsupported(task, name: str) -> str | None:
    """Why perturbation `name` does not apply to `task`'s evaluation sets (None: it applies)."""
    spec = get_spec(task.format)
    if not spec.input_fields:
        return f"format {task.format} has no evaluation input to perturb"
    if task.format == "retrieval" and task.layout != "pairs":
        return f"a {task.layout} retrieval pool is not perturbed"
    if spec.aligned_words and name == "word_order":
        return f"word order is not changed in {task.format} (its labels follow the words)"
    return None


def misfit(other, task) -> str | None:
    """Why task `other` cannot be an adversarial set for a model of `task` (None: it can): it needs the same format
    and the same number of labels (matched by position: a PAWS label 1 is QQP's `duplicate`)."""
    if other.name == task.name:
        return f"adversarial set {other.name!r} is the task itself"
    if other.format != task.format:
        return f"adversarial set {other.name!r} is a {other.format} task; {task.name!r} is {task.format}"
    if other.num_labels is not None and task.num_labels is not None and other.num_labels != task.num_labels:
        return f"adversarial set {other.name!r} has labels {other.labels}; {task.name!r} has {task.labels}"
    return None


def adversarial_tasks(names, task, registry: dict) -> list:
    """The registered tasks `names`, checked to fit a model of `task` (see `misfit`)."""
    found = []
    for name in names:
        if name not in registry:
            raise TaskError(f"adversarial set {name!r} is not a registered task; registered: {', '.join(registry)}")
        reason = misfit(registry[name], task)
        if reason:
            raise TaskError(reason)
        found.append(registry[name])
    return found


# ---------------------------------------------------------------------------------------------- the dictionary

class Dictionary:
    """Words aligned across languages: each entry is one word (or phrase) per language."""

    def __init__(self, entries: list[dict[str, str]], source: str):
        self.entries, self.source = entries, source
        self._tables: dict[tuple, dict[str, list[str]]] = {}

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Dictionary":
        path = Path(path) if path else BUILTIN_DICTIONARY
        if not path.exists():
            raise FileNotFoundError(f"dictionary {path} does not exist")
        if path.suffix == ".json":
            raw = json.loads(path.read_text(encoding="utf-8"))
            languages = raw.get("languages")
            entries = [dict(zip(languages, e)) if isinstance(e, list) else dict(e) for e in raw.get("entries", [])]
        else:  # MUSE: "<src>-<tgt>[.0-5000].txt", one "source target" pair a line
            match = re.match(r"^([a-z]{2,3})-([a-z]{2,3})\b", path.name)
            if match is None:
                raise TaskError(f"dictionary {path}: a text dictionary is named <src>-<tgt>.txt (MUSE), e.g. en-de.txt")
            src, tgt = match.groups()
            entries = [dict(zip((src, tgt), line.split(None, 1))) for line in
                       path.read_text(encoding="utf-8").splitlines() if len(line.split(None, 1)) == 2]
        entries = [{lang: word.strip() for lang, word in e.items() if word and word.strip()} for e in entries]
        entries = [e for e in entries if len(e) >= 2]
        if not entries:
            raise TaskError(f"dictionary {path}: no entry with words in two languages")
        return cls(entries, str(path))

    @cached_property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.entries, sort_keys=True).encode()).hexdigest()[:16]

    def targets(self, lang: str) -> list[str]:
        """The languages that some entry translates a word of `lang` into."""
        return sorted({other for e in self.entries if lang in e for other in e if other != lang})

    def table(self, lang: str, target: str, single_words: bool = False) -> dict[str, list[str]]:
        """Lower-cased word of `lang` -> its translations into `target` (sorted, no duplicates)."""
        key, cache = (lang, target, single_words), self._tables
        if key not in cache:
            table: dict[str, set[str]] = {}
            for entry in self.entries:
                word, translation = entry.get(lang), entry.get(target)
                if not word or not translation or " " in word or translation.lower() == word.lower() \
                        or (single_words and " " in translation):
                    continue
                table.setdefault(word.lower(), set()).add(translation)
            cache[key] = {word: sorted(translations) for word, translations in table.items()}
        return cache[key]


# ---------------------------------------------------------------------------------------------- one word

def _split_core(word: str) -> tuple[str, str, str]:
    """(leading punctuation, the word, trailing punctuation)."""
    match = _CORE.match(word)
    return match.group(1), match.group(2), match.group(3)


def _case_like(char: str, model: str) -> str:
    return char.upper() if model.isupper() else char.lower() if model.islower() else char


def _neighbour(char: str, rng: random.Random) -> str | None:
    """A key next to `char` on a QWERTY keyboard (None for letters not on it)."""
    lower = char.lower()
    for row, keys in enumerate(_KEYBOARD):
        column = keys.find(lower)
        if column < 0:
            continue
        near = [keys[c] for c in (column - 1, column + 1) if 0 <= c < len(keys)]
        if row > 0:
            near += [_KEYBOARD[row - 1][c] for c in (column, column + 1) if c < len(_KEYBOARD[row - 1])]
        if row + 1 < len(_KEYBOARD):
            near += [_KEYBOARD[row + 1][c] for c in (column - 1, column) if 0 <= c < len(_KEYBOARD[row + 1])]
        return _case_like(rng.choice(near), char)
    return None


def _typo_in(core: str, op: str, rng: random.Random) -> str | None:
    letters = [i for i, c in enumerate(core) if c.isalpha()]
    if op == "swap":
        pairs = [i for i in letters if i + 1 < len(core) and core[i + 1].isalpha()
                 and core[i].lower() != core[i + 1].lower()]
        if not pairs:
            return None
        i = rng.choice(pairs)  # the letters move, the case pattern stays (Milan -> Mialn, not iMlan)
        return core[:i] + _case_like(core[i + 1], core[i]) + _case_like(core[i], core[i + 1]) + core[i + 2:]
    if op == "drop":
        if len(letters) < 2:
            return None
        i = rng.choice(letters)
        return core[:i] + core[i + 1:]
    i = rng.choice(letters)
    near = _neighbour(core[i], rng)
    if op == "insert":
        return core[:i + 1] + (near or core[i]) + core[i + 1:]
    if near is None:  # replace, off the keyboard: another letter of the same word (same script)
        others = sorted({core[j] for j in letters if core[j].lower() != core[i].lower()})
        if not others:
            return None
        near = _case_like(rng.choice(others), core[i])
    return core[:i] + near + core[i + 1:]


def typo(word: str, rng: random.Random) -> str | None:
    """`word` with one character-level typo, or None if it has no letters or holds digits."""
    before, core, after = _split_core(word)
    if not any(c.isalpha() for c in core) or any(c.isdigit() for c in core):
        return None
    operations = ["swap", "drop", "insert", "replace"]
    rng.shuffle(operations)
    for op in operations:
        changed = _typo_in(core, op, rng)
        if changed is not None and changed != core:
            return before + changed + after
    return None


def recase(word: str, rng: random.Random) -> str | None:
    """`word` upper-cased, lower-cased or capitalized (one that differs), or None for uncased words."""
    before, core, after = _split_core(word)
    options = sorted({core.upper(), core.lower(), core[:1].upper() + core[1:].lower()} - {core})
    return before + rng.choice(options) + after if options else None


def translate(word: str, rng: random.Random, table: dict[str, list[str]]) -> str | None:
    """`word` in another language of the dictionary (keeping its capitalization), or None if it has none."""
    before, core, after = _split_core(word)
    targets = table.get(core.lower())
    if not targets:
        return None
    target = rng.choice(targets)
    if core.isupper() and len(core) > 1:
        target = target.upper()
    elif core[:1].isupper():
        target = target[:1].upper() + target[1:]
    return before + target + after


# ---------------------------------------------------------------------------------------------- texts and tokens

def _change_some(words: list[str], change, rng: random.Random, rate: float) -> list[str]:
    """Each word that `change` can change is changed with probability `rate`; at least one is."""
    candidates = [(i, new) for i, word in enumerate(words) if word and (new := change(word, rng)) is not None]
    chosen = [c for c in candidates if rng.random() < rate]
    if not chosen and candidates:
        chosen = [rng.choice(candidates)]
    words = list(words)
    for i, new in chosen:
        words[i] = new
    return words


def shuffle_locally(words: list[str], rng: random.Random, rate: float, window: int = WINDOW) -> list[str]:
    """Words reordered inside consecutive windows of `window` words; at least one window changes."""
    options = []
    for start in range(0, len(words), window):
        part = words[start: start + window]
        orders = [p for p in itertools.permutations(part) if list(p) != part]
        options.append((start, sorted(set(orders))))
    movable = [(start, orders) for start, orders in options if orders]
    chosen = [m for m in movable if rng.random() < rate]
    if not chosen and movable:
        chosen = [rng.choice(movable)]
    words = list(words)
    for start, orders in chosen:
        order = rng.choice(orders)
        words[start: start + len(order)] = order
    return words


class Perturber:
    """One perturbation, with its seed (and dictionary, for code_switch)."""

    def __init__(self, name: str, seed: int = 0, dictionary: Dictionary | None = None, rate: float | None = None):
        check_perturbations([name])
        self.name, self.seed = name, seed
        self.rate = RATES[name] if rate is None else rate
        self.dictionary = (dictionary or Dictionary.load()) if name == "code_switch" else None

    def key(self) -> dict:
        """What decides the perturbed text (part of the feature cache key)."""
        return {"perturbation": self.name, "seed": self.seed, "rate": self.rate, "version": PERTURB_VERSION,
                "dictionary": self.dictionary.fingerprint if self.dictionary else None}

    def _rng(self, lang: str, where: str) -> random.Random:
        return random.Random(f"{self.seed}|{self.name}|{lang}|{where}")

    def _word_change(self, lang: str, where: str, single_words: bool):
        if self.name == "typos":
            return typo
        if self.name == "casing":
            return recase
        # code_switch: into one other language per example (all its fields), drawn from the example's own seed
        targets = self.dictionary.targets(lang)
        if not targets:
            return lambda word, rng: None
        target = self._rng(lang, where.split("/")[0]).choice(targets)
        table = self.dictionary.table(lang, target, single_words)
        return lambda word, rng: translate(word, rng, table)

    def text(self, text: str, lang: str, where: str = "") -> str:
        """A perturbed copy of `text` (whitespace kept as it is)."""
        if not text:
            return text
        rng = self._rng(lang, where)
        pieces = _SPACE.split(text)  # words at even positions, the whitespace between them at odd ones
        words = pieces[0::2]
        if self.name == "word_order":
            words = self._reorder(words, rng)
        else:
            words = _change_some(words, self._word_change(lang, where, single_words=False), rng, self.rate)
        pieces[0::2] = words
        return "".join(pieces)

    def _reorder(self, words: list[str], rng: random.Random) -> list[str]:
        present = [w for w in words if w]
        final = _FINAL_PUNCTUATION.search(present[-1]) if present else None
        if final and final.start() > 0:  # "Tokyo." -> "Tokyo" moves, "." stays at the end
            present[-1] = present[-1][:final.start()]
        present = shuffle_locally(present, rng, self.rate)
        if final and final.start() > 0:
            present[-1] += final.group()
        it = iter(present)
        return [next(it) if w else w for w in words]

    def tokens(self, tokens: list[str], lang: str, where: str = "") -> list[str]:
        """Perturbed tokens, one for one (tagging: the tags stay aligned)."""
        if self.name == "word_order":
            raise TaskError("word_order does not apply to tokens (the tags follow the words)")
        rng = self._rng(lang, where)
        change = self._word_change(lang, where, single_words=True)
        # a token never becomes empty or splits in two
        return _change_some(tokens, lambda w, r: _keep_one_token(change(w, r)), rng, self.rate)

    def value(self, value, field_name: str, lang: str, where: str):
        """A canonical field's perturbed value: a text, a token list (tokens) or a list of texts (choices)."""
        if value is None:
            return value
        if field_name == "tokens":
            return self.tokens(value, lang, where)
        if isinstance(value, list):
            return [self.text(v, lang, f"{where}/{j}") for j, v in enumerate(value)]
        return self.text(value, lang, where)


def _keep_one_token(word: str | None) -> str | None:
    return word if word and not _SPACE.search(word) else None


# ---------------------------------------------------------------------------------------------- data sets

@dataclass(frozen=True)
class Robustness:
    """What a datamodule adds to its final evaluation sets: perturbed copies and adversarial sets."""

    perturbations: tuple[str, ...] = ()
    seed: int = 0
    dictionary: str | None = None  # code_switch: a user dictionary (default: the built-in one)
    adversarial: tuple = ()  # TaskSpecs of other tasks of the same format and labels
    rate: float | None = None  # None: each perturbation's own rate (RATES)

    def perturbers(self) -> list[Perturber]:
        dictionary = Dictionary.load(self.dictionary) if "code_switch" in self.perturbations else None
        return [Perturber(name, self.seed, dictionary, self.rate) for name in check_perturbations(self.perturbations)]


def input_fields(task, examples) -> list[str]:
    """The columns of `examples` that are input text of `task`'s format (its SPEC's input_fields)."""
    return [f for f in get_spec(task.format).input_fields if f in examples.column_names]


def perturb_examples(examples, task, lang: str, perturber: Perturber, key: dict | None = None):
    """A perturbed copy of canonical `examples` (a datasets.Dataset, its content identified by `key`): only the
    task's input fields change."""
    fields = input_fields(task, examples)

    def apply(batch, indices):
        return {name: [perturber.value(v, name, lang, f"{i}/{name}") for v, i in zip(batch[name], indices)]
                for name in fields}

    key = json.dumps({"data": key, "lang": lang, "fields": fields, **perturber.key()}, sort_keys=True, default=str)
    return examples.map(apply, batched=True, with_indices=True, keep_in_memory=True, load_from_cache_file=False,
                        new_fingerprint=hashlib.sha256(key.encode()).hexdigest()[:32],
                        desc=f"perturbing ({perturber.name}) {task.name}/{lang}")


def samples(clean, perturbed, task, n: int = 3) -> list[dict]:
    """The first `n` examples' input fields, clean and perturbed, side by side (for the tracked run)."""
    fields = input_fields(task, clean)
    count = min(n, len(clean), len(perturbed))
    return [{"clean": {f: clean[i][f] for f in fields}, "perturbed": {f: perturbed[i][f] for f in fields}}
            for i in range(count)]


def changed_share(clean, perturbed, task) -> float:
    """The share of examples whose input differs from the clean one."""
    fields = input_fields(task, clean)
    if not len(clean):
        return 0.0
    before, after = (list(zip(*(rows[f] for f in fields))) for rows in (clean, perturbed))
    return sum(a != b for a, b in zip(before, after)) / len(clean)
