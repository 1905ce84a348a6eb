"""Task formats. Each format module owns its whole path: example -> features -> batch -> head -> score.

This table is imported by the task registry, so it stays free of torch; `get_format` imports the module.
"""

import importlib

# format name -> metrics a task of that format may name as its primary metric
FORMAT_METRICS = {
    "classification": ("accuracy",),
    "multiple_choice": ("accuracy",),
    "span_qa": ("f1", "exact_match"),
    "tagging": ("f1", "accuracy"),
    "masked_lm": ("perplexity",),
    "retrieval": ("accuracy", "f1", "map_at_20"),
}


def get_format(name: str):
    """The format object of `name` (see formats/base.py for its interface)."""
    if name not in FORMAT_METRICS:
        raise ValueError(f"unknown format {name!r}; valid formats: {', '.join(FORMAT_METRICS)}")
    return importlib.import_module(f"lightning_modules.formats.{name}").FORMAT
