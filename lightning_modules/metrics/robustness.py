"""Robustness scores: how much a perturbed copy or an adversarial set of an evaluation split loses against the clean one.

A perturbed copy of split `test` is named `test.typos` and an adversarial set `test.anli_plus` (MLflow names allow
no `~`), so their scores land as `test.typos/<lang>/<metric>`; the drops as `robustness/<variant>/<lang>/<metric>_drop`.
"""

from __future__ import annotations

from statistics import mean

from lightning_modules.formats import lower_is_better

SEPARATOR = "."  # "<split>.<variant>": the split name of a perturbed copy or an adversarial set
SUMMARY_LANGUAGES = ("mean", "zero_shot_mean")


def perturbed_split(split: str, variant: str) -> str:
    return f"{split}{SEPARATOR}{variant}"


def parse_split(split: str) -> tuple[str, str | None]:
    """(clean split, variant): ("test", "typos") for "test.typos", ("test", None) for "test"."""
    clean, _, variant = split.partition(SEPARATOR)
    return clean, variant or None


def robustness_drops(scores: dict[str, float], synthetic=()) -> dict[str, float]:
    """`robustness/<variant>/<lang>/<metric>_drop`: clean minus perturbed score of each perturbed or adversarial
    set (perturbed minus clean where lower is better), from the test split where there is one, else validation;
    `robustness/<variant>/mean/<metric>_drop` over languages and `robustness/mean/<metric>_drop` over the means of
    the `synthetic` variants (the perturbations, not the adversarial sets)."""
    found: dict[tuple[str, str], dict[str, dict[str, float]]] = {}  # (variant, metric) -> split -> lang -> drop
    for key, value in scores.items():
        parts = key.split("/")
        if len(parts) != 3 or parts[1] in SUMMARY_LANGUAGES:
            continue
        split, lang, metric = parts
        clean_split, variant = parse_split(split)
        clean = scores.get(f"{clean_split}/{lang}/{metric}")
        if variant is None or clean is None:
            continue
        drop = value - clean if lower_is_better(metric) else clean - value
        found.setdefault((variant, metric), {}).setdefault(clean_split, {})[lang] = float(drop)
    drops, means = {}, {}
    for (variant, metric), by_split in sorted(found.items()):
        by_lang = by_split.get("test") or by_split.get("validation") or next(iter(by_split.values()))
        drops.update({f"robustness/{variant}/{lang}/{metric}_drop": d for lang, d in sorted(by_lang.items())})
        drops[f"robustness/{variant}/mean/{metric}_drop"] = mean(by_lang.values())
        if variant in synthetic:
            means.setdefault(metric, []).append(drops[f"robustness/{variant}/mean/{metric}_drop"])
    drops.update({f"robustness/mean/{metric}_drop": mean(values) for metric, values in means.items()})
    return drops
