"""Validation errors as one line: where (the flag or the key), the value given, what is wrong, what is valid."""

from __future__ import annotations

from typing import Callable, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError


class ConfigError(ValueError):
    """A setting that is not valid; the message names the flag or key, the value and the valid range."""


def _field(model: type[BaseModel], loc: tuple):
    """(the model holding the last key of `loc`, that key's FieldInfo or None)."""
    field = None
    for key in loc:
        if not isinstance(key, str) or not (isinstance(model, type) and issubclass(model, BaseModel)):
            break
        field = model.model_fields.get(key)
        if field is None:
            return model, None
        inner = [a for a in (field.annotation, *get_args(field.annotation)) if isinstance(a, type)
                 and issubclass(a, BaseModel)]
        if key != loc[-1] and inner:
            model = inner[0]
    return model, field


def choices_of(annotation) -> tuple | None:
    if get_origin(annotation) is Literal:
        return get_args(annotation)
    for arg in get_args(annotation):
        found = choices_of(arg)
        if found:
            return found
    return None


def valid_range(field) -> str:
    """What values a field takes, in words: '> 0 and <= 1', 'one of: full, lora', 'an integer'."""
    choices = choices_of(field.annotation)
    if choices:
        return "one of " + ", ".join(map(str, choices))
    bounds = []
    for item in field.metadata:
        for attr, symbol in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if getattr(item, attr, None) is not None:
                bounds.append(f"{symbol} {getattr(item, attr)}")
    kinds = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    args = get_args(field.annotation) or (field.annotation,)
    kind = next((kinds[a] for a in args if a in kinds), "a list" if get_origin(field.annotation) is tuple else "")
    return " ".join(filter(None, [kind, " and ".join(bounds)])) or str(field.annotation)


def explain(error: ValidationError, model: type[BaseModel], where: Callable[[tuple], str]) -> ConfigError:
    """The first problem of `error` as one line; `where(loc)` names a setting as the user wrote it."""
    problem = error.errors()[0]
    loc = tuple(k for k in problem["loc"] if isinstance(k, str))
    holder, field = _field(model, loc)
    if problem["type"] == "extra_forbidden":
        return ConfigError(f"{where(loc)}: unknown setting; valid: {', '.join(holder.model_fields)}")
    message = problem["msg"].removeprefix("Value error, ").removeprefix("Input ")
    valid = f"; valid: {valid_range(field)}" if field is not None and problem["type"] != "value_error" else ""
    value = problem.get("input")
    shown = "" if problem["type"] == "missing" else f" {value}" if isinstance(value, (str, int, float)) \
        else f" {value!r}"
    return ConfigError(f"{where(loc)}{shown}: {message}{valid}")


def validate(model: type[BaseModel], values: dict, where: Callable[[tuple], str]):
    try:
        return model.model_validate(values)
    except ValidationError as error:
        raise explain(error, model, where) from None
