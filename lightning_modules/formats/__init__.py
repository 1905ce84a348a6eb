"""Task formats. Each format is one module that owns its whole path, example -> features -> batch -> head ->
score, and declares what it is in `SPEC` (formats/spec.py): fields, metrics and their direction, the input text
perturbations may change, whether it trains, how a task's score is formed. A module also defines `FORMAT`, the
object that does the work (formats/base.py).

The built-in formats live here; a task may name any importable module as its format instead (`format:
my_package.my_format`): nothing else needs to change to add a format.
"""

from __future__ import annotations

import importlib
from functools import cache

from lightning_modules.formats.spec import FormatSpec

BUILTIN = ("classification", "multiple_choice", "span_qa", "tagging", "masked_lm", "retrieval")
MIXTURE = "mixture"  # the format of a mixture of tasks (formats/mixture.py): declared with `mixture:`, never by name


class UnknownFormat(ValueError):
    pass


@cache
def _module(name: str):
    path = f"lightning_modules.formats.{name}" if name in (*BUILTIN, MIXTURE) else name
    try:
        module = importlib.import_module(path)
    except ModuleNotFoundError as error:
        if error.name is None or not path.startswith(error.name):
            raise
        raise UnknownFormat(f"unknown format {name!r}; built-in: {', '.join(BUILTIN)}, or an importable module "
                            f"defining SPEC and FORMAT") from None
    if not isinstance(getattr(module, "SPEC", None), FormatSpec) or not hasattr(module, "FORMAT"):
        raise UnknownFormat(f"format module {path} must define SPEC (a FormatSpec) and FORMAT")
    return module


def get_spec(name: str) -> FormatSpec:
    return _module(name).SPEC


def get_format(name: str):
    """The format object of `name` (see formats/base.py for its interface)."""
    return _module(name).FORMAT


def lower_is_better(metric: str) -> bool:
    """Whether a lower value of `metric` is better, as declared by the built-in formats (perplexity)."""
    return any(get_spec(name).lower_is_better(metric) for name in BUILTIN)
