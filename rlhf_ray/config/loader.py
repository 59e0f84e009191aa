"""YAML file + dotted `key.sub=value` overrides -> one validated config, or a `ConfigError` naming each key.

Everything here runs before a job touches Ray, so a typo costs a second instead of a cluster start.
"""

from __future__ import annotations

import copy
import difflib
import enum
import json
import os
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails, PydanticUndefined, to_jsonable_python

M = TypeVar("M", bound=BaseModel)

OVERRIDE_FORM = "key.sub=value"
_MAX_VALUE_CHARS = 80
_SEQUENCES = (list, tuple, set, frozenset, Sequence)

# What a pydantic error type means, phrased as "expected ..."; `{...}` fields come from the error's ctx.
_EXPECTED: dict[str, str] = {
    "int_type": "int",
    "int_parsing": "int",
    "int_from_float": "int (a whole number)",
    "float_type": "float",
    "float_parsing": "float",
    "finite_number": "a finite number",
    "bool_type": "bool",
    "bool_parsing": "bool",
    "string_type": "str",
    "string_unicode": "str",
    "list_type": "a list",
    "tuple_type": "a list",
    "set_type": "a list",
    "frozen_set_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "none_required": "null",
    "greater_than": "a value > {gt}",
    "greater_than_equal": "a value >= {ge}",
    "less_than": "a value < {lt}",
    "less_than_equal": "a value <= {le}",
    "multiple_of": "a multiple of {multiple_of}",
    "too_short": "at least {min_length} items",
    "too_long": "at most {max_length} items",
    "string_too_short": "at least {min_length} characters",
    "string_too_long": "at most {max_length} characters",
    "string_pattern_mismatch": "a string matching '{pattern}'",
    "literal_error": "one of {expected}",
    "enum": "one of {expected}",
}


class ConfigError(ValueError):
    """A config that must not start a job: every problem found, one readable line each."""

    def __init__(self, problems: str | Sequence[str]) -> None:
        self.problems: tuple[str, ...] = (problems,) if isinstance(problems, str) else tuple(problems)
        super().__init__(self.problems)

    def __str__(self) -> str:
        return "\n".join(self.problems)


def parse_override(text: str) -> tuple[str, object]:
    """Split `a.b.c=value` into key and YAML-typed value, so `3`, `0.5`, `true`, `[a,b]` mean what they say.

    An empty value (`a=`) is the empty string rather than YAML's null, which is spelled `a=null`.
    """
    key, sep, raw = text.partition("=")
    if not sep:
        raise ConfigError(f"malformed override {text!r}: no '='; expected the form {OVERRIDE_FORM}")
    if not key or "" in key.split("."):
        raise ConfigError(f"malformed override {text!r}: empty key part; expected the form {OVERRIDE_FORM}")
    if not raw:
        return key, ""
    try:
        return key, yaml.safe_load(raw)
    except Exception as error:  # not only YAMLError: see _yaml_reason
        raise ConfigError(
            f"override {text!r}: value is not valid YAML ({_yaml_reason(error)}); quote it to pass a string"
        ) from None


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of `data` with each override set in turn, creating missing sections; later ones win.

    A section that is null (e.g. an optional section left out in YAML) becomes a mapping; any other
    non-mapping in the way is an error rather than silently replaced.
    """
    result = copy.deepcopy(dict(data))
    for text in overrides:
        key, value = parse_override(text)
        *sections, leaf = key.split(".")
        node = result
        for depth, name in enumerate(sections):
            child = node.get(name)
            if child is None:
                child = node[name] = {}
            if not isinstance(child, dict):
                where = ".".join(sections[: depth + 1])
                raise ConfigError(f"override {text!r}: {where!r} is {_show(child)}, not a section of keys")
            node = child
        node[leaf] = value
    return result


def load_config(
    schema: type[M], path: str | os.PathLike[str] | None = None, overrides: Sequence[str] = ()
) -> M:
    """Build the job's config: schema defaults < YAML file < overrides, validated in one go."""
    data = _read_yaml(Path(path)) if path is not None else {}
    data = apply_overrides(data, overrides)
    try:
        return schema.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_problems(schema, error)) from None


def dump_config(config: BaseModel) -> str:
    """The fully resolved config as YAML: what the job really ran with, loadable again by `load_config`."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def config_keys(schema: type[BaseModel]) -> list[str]:
    """Every settable dotted key as `key (type, default D): description`, for `--help` text.

    Defaults are written as JSON, which is valid YAML, so they can be pasted into an override.
    """
    return _keys(schema, _default_instance(schema), "")


# ---------------------------------------------------------------- reading YAML


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file '{path}' not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config file '{path}': {error}") from None
    try:
        data = yaml.safe_load(text)
    except Exception as error:  # not only YAMLError: see _yaml_reason
        raise ConfigError(f"{_yaml_location(path, error)}: invalid YAML: {_yaml_reason(error)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file '{path}' must hold a mapping of keys at the top level, got {type(data).__name__}"
        )
    return data


def _yaml_location(path: Path, error: Exception) -> str:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    return f"config file '{path}'" + (f", line {mark.line + 1}, column {mark.column + 1}" if mark else "")


def _yaml_reason(error: Exception) -> str:
    """The gist of a YAML failure. Besides YAMLError, PyYAML's constructors raise ValueError, KeyError,
    IndexError... on malformed tagged or dated scalars (`!!int abc`, `!!bool x`, `2020-02-30`), and deep
    nesting raises RecursionError, which is why callers catch Exception around `yaml.safe_load`.
    """
    if isinstance(error, yaml.MarkedYAMLError):
        return " ".join(part for part in (error.context, error.problem) if part) or type(error).__name__
    return str(error)


# ---------------------------------------------------------------- explaining validation errors


def _problems(schema: type[BaseModel], error: ValidationError) -> list[str]:
    """One line per problem; a value failing every member of a union gets one line listing them all."""
    lines: dict[str, list[str]] = {}
    for detail in error.errors():
        head, expected = _describe(schema, detail)
        wanted = lines.setdefault(head, [])
        if expected and expected not in wanted:
            wanted.append(expected)
    return [f"{head}, expected {' or '.join(wanted)}" if wanted else head for head, wanted in lines.items()]


def _describe(schema: type[BaseModel], detail: ErrorDetails) -> tuple[str, str | None]:
    """A problem's line (or, for a wrong value, its start) and what was expected instead."""
    kind, loc = detail["type"], detail["loc"]
    key, annotation = _follow(schema, loc)
    if kind == "extra_forbidden":
        return _unknown_key(schema, loc, key), None
    if kind == "missing":
        return _missing(key, loc, annotation), None
    if kind == "invalid_key":
        parent, _ = _follow(schema, loc[:-1])
        return f"invalid key {_show(detail['input'])} {_where(parent)}: keys must be strings", None
    if kind in ("value_error", "assertion_error"):
        reason = detail["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        return (f"key '{key}': {reason}" if key else f"invalid config: {reason}"), None
    return f"key '{key}': got {_show(detail['input'])}", _expected(kind, detail, annotation)


def _unknown_key(schema: type[BaseModel], loc: tuple[int | str, ...], key: str) -> str:
    parent, model = _follow(schema, loc[:-1])
    names = _field_names(_unwrap(model))
    if not names:
        return f"unknown key '{key}'"
    close = difflib.get_close_matches(str(loc[-1]), names, n=1)
    if close:
        return f"unknown key '{key}' (did you mean '{_join(parent, close[0])}'?)"
    return f"unknown key '{key}' (valid keys {_where(parent)}: {', '.join(names)})"


def _missing(key: str, loc: tuple[int | str, ...], annotation: object) -> str:
    """Name the leaf keys to set when a whole required section is absent, not just the section."""
    if isinstance(loc[-1], int):
        return f"missing item '{key}'"
    leaves = _required_keys(_unwrap(annotation), key) or [key]
    plural = "s" if len(leaves) > 1 else ""
    return f"missing required key{plural} " + ", ".join(f"'{leaf}'" for leaf in leaves)


def _required_keys(model: object, prefix: str) -> list[str]:
    if not _is_model(model):
        return []
    keys: list[str] = []
    for name, field in model.model_fields.items():
        if field.is_required():
            key = _join(prefix, field.alias or name)
            keys.extend(_required_keys(_unwrap(field.annotation), key) or [key])
    return keys


def _expected(kind: str, detail: ErrorDetails, annotation: object) -> str:
    choices = _choices(_unwrap(annotation))
    if kind in ("literal_error", "enum") and choices:
        return "one of " + ", ".join(repr(choice) for choice in choices)
    template = _EXPECTED.get(kind)
    if template is None:
        return detail["msg"].removeprefix("Input should be ")
    return template.format_map(detail.get("ctx", {}))


def _choices(annotation: object) -> tuple[object, ...]:
    if get_origin(annotation) is Literal:
        return get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return tuple(member.value for member in annotation)
    return ()


def _show(value: object) -> str:
    """`'many' (str)`: the value as the user wrote it (shortened) and the type YAML gave it."""
    text = repr(value)
    if len(text) > _MAX_VALUE_CHARS:
        text = text[: _MAX_VALUE_CHARS - 3] + "..."
    return f"{text} ({type(value).__name__})"


def _where(key: str) -> str:
    return f"in '{key}'" if key else "at the top level"


def _join(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


# ---------------------------------------------------------------- walking the schema


def _follow(schema: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[str, object]:
    """Walk a pydantic error location through the schema: its dotted key and the annotation found there.

    Pydantic puts the name of the union member tried into the location (`('mode', 'str')`); those parts
    are dropped from the key. The annotation is None once the location leaves what the schema describes.
    """
    key, annotation = "", schema
    for part in loc:
        members = _union_members(annotation)
        if members and isinstance(part, str):
            annotation = next((m for m in members if getattr(m, "__name__", None) == part), None)
            continue
        key = f"{key}[{part}]" if isinstance(part, int) else _join(key, part)
        annotation = _child(annotation, part)
    return key, annotation


def _child(annotation: object, part: int | str) -> object:
    """The annotation one step below `annotation` along `part` of a location, or None."""
    annotation = _unwrap(annotation)
    if _is_model(annotation):
        field = annotation.model_fields.get(part) if isinstance(part, str) else None
        return field.annotation if field else None
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is tuple and args and args[-1] is not Ellipsis:
        return args[part] if isinstance(part, int) and part < len(args) else None
    if origin in _SEQUENCES and args:
        return args[0]
    if origin in (dict, Mapping) and len(args) == 2:
        return args[1]
    return None


def _unwrap(annotation: object) -> object:
    """Strip `Annotated[...]` and `Optional[...]`, which do not change what keys or values look like."""
    while True:
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) in (Union, types.UnionType) and len(_non_none(annotation)) == 1:
            annotation = _non_none(annotation)[0]
        else:
            return annotation


def _union_members(annotation: object) -> tuple[object, ...]:
    """The members of a union of two or more non-null types (which pydantic tags in locations), else ()."""
    annotation = _unwrap(annotation)
    return _non_none(annotation) if get_origin(annotation) in (Union, types.UnionType) else ()


def _non_none(annotation: object) -> tuple[object, ...]:
    return tuple(arg for arg in get_args(annotation) if arg is not type(None))


def _is_model(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _field_names(model: object) -> list[str]:
    if not _is_model(model):
        return []
    return [field.alias or name for name, field in model.model_fields.items()]


# ---------------------------------------------------------------- listing keys


def _default_instance(schema: type[BaseModel]) -> BaseModel | None:
    """The all-defaults instance (its sections may override their own defaults); None if a key is required."""
    try:
        return schema()
    except ValidationError:
        return None


def _keys(model: type[BaseModel], instance: BaseModel | None, prefix: str) -> list[str]:
    keys: list[str] = []
    for name, field in model.model_fields.items():
        key = _join(prefix, name)
        if instance is not None:
            default = getattr(instance, name)
        elif field.is_required():
            default = PydanticUndefined
        else:
            default = field.get_default(call_default_factory=True)
        section = _unwrap(field.annotation)
        if _is_model(section):
            keys.extend(_keys(section, default if isinstance(default, BaseModel) else None, key))
            continue
        shown = "required" if default is PydanticUndefined else f"default {_as_json(default)}"
        line = f"{key} ({_type_name(field.annotation)}, {shown})"
        keys.append(f"{line}: {field.description}" if field.description else line)
    return keys


def _as_json(value: object) -> str:
    return json.dumps(to_jsonable_python(value))


def _type_name(annotation: object) -> str:
    if isinstance(annotation, type) and not get_args(annotation):
        return annotation.__name__
    return repr(annotation).replace("typing.", "")
