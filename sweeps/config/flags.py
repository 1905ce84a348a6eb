"""Command-line flags made from the schema: one flag per field, its help and default from the field."""

from __future__ import annotations

import argparse
from typing import get_args, get_origin

from pydantic import BaseModel

from sweeps.config.errors import choices_of, valid_range, validate
from sweeps.config.schema import flag


def option(name: str, field) -> str:
    return (field.json_schema_extra or {}).get("flag", flag(name))


def _is_list(field) -> bool:
    return any(get_origin(a) is tuple for a in (field.annotation, *get_args(field.annotation)))


def add_flags(parser: argparse.ArgumentParser, model: type[BaseModel], title: str, only=None) -> None:
    """Flags for the fields of `model` (or those in `only`); a flag not given keeps the field's default."""
    group = parser.add_argument_group(title)
    for name, field in model.model_fields.items():
        if only is not None and name not in only:
            continue
        extra = field.json_schema_extra or {}
        if extra.get("flag", "") is None:  # set by xstilts itself, not a flag
            continue
        default = "" if field.default in (None, (), False) else f"; default: {_shown(field.default)}"
        bounds = f"; valid: {valid_range(field)}" if field.metadata else ""
        common = {"dest": name, "default": argparse.SUPPRESS, "help": (field.description or "") + bounds + default}
        if field.annotation is bool:
            # a setting that is on by default is turned off with --no-<flag>
            action = argparse.BooleanOptionalAction if field.default is True else "store_true"
            group.add_argument(option(name, field), action=action, **common)
        elif extra.get("append"):
            group.add_argument(option(name, field), action="append", metavar="FILE", **common)
        else:
            group.add_argument(option(name, field), metavar=extra.get("metavar") or _metavar(field), **common)


def _metavar(field) -> str:
    choices = choices_of(field.annotation)
    if choices:
        return "{" + ",".join(map(str, choices)) + "}" + (",..." if _is_list(field) else "")
    if _is_list(field):
        return "A,B,..."
    args = set(get_args(field.annotation)) | {field.annotation}
    return "N" if int in args else "X" if float in args else "TEXT"


def _shown(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def given(args: argparse.Namespace, model: type[BaseModel], only=None) -> dict:
    """The values the user gave for fields of `model` (or those in `only`), lists split at commas."""
    values = {}
    for name, field in model.model_fields.items():
        if not hasattr(args, name) or only is not None and name not in only:
            continue
        value = getattr(args, name)
        if _is_list(field) and isinstance(value, str):
            value = tuple(v.strip() for v in value.split(",") if v.strip())
        values[name] = value
    return values


def from_flags(args: argparse.Namespace, model: type[BaseModel], extra: dict | None = None, only=None):
    """`model` validated from the given flags (or those in `only`); an error names the flag as the user typed it."""
    fields = model.model_fields

    def where(loc: tuple) -> str:
        return option(loc[0], fields[loc[0]]) if loc and loc[0] in fields else ".".join(loc)

    return validate(model, {**given(args, model, only), **(extra or {})}, where)


def numbers_as_values(argv: list[str]) -> list[str]:
    """`--lr -1e-3` as `--lr=-1e-3`: argparse takes a value that starts with '-' and is not a plain decimal for an
    option, so a negative number in scientific notation would give 'expected one argument' instead of the range."""
    out: list[str] = []
    for token in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and token.startswith("-") and _number(token):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
