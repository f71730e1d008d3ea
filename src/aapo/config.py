"""Typed configs from YAML files and `--key value` overrides, validated once.

Every command's options live in one dataclass whose fields carry their documentation
(`field(metadata={"help": ...})`). `load_config` reads a YAML file (a shipped recipe name or a
path), applies command-line overrides, rejects unknown keys by name and by where they came
from (with the nearest known key), and checks each value against the field's type. A
command-line value is read by its field's type: text for a string option, YAML otherwise.
Derived values are computed by the dataclass itself (`__post_init__`), in one place.

A field whose entries follow another list field (metadata `follows`) is carried by name when
the command line replaces that list and leaves the follower the file set (`_carry_followers`),
or refused; an error that names options the file set says so (`_with_origins`).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the key or file."""


def recipe_path(name: str) -> Path:
    """Path of a shipped recipe (`aapo/recipes/<name>.yaml`)."""
    return Path(str(resources.files("aapo") / "recipes" / f"{name}.yaml"))


def recipe_names() -> list[str]:
    folder = resources.files("aapo") / "recipes"
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def read_yaml(path_or_recipe: str | Path) -> dict[str, Any]:
    """A YAML mapping from a file path, or from a shipped recipe when given a bare name."""
    path = Path(path_or_recipe)
    if not path.exists() and recipe_path(str(path_or_recipe)).exists():
        path = recipe_path(str(path_or_recipe))
    if not path.exists():
        raise ConfigError(
            f"config file {str(path_or_recipe)!r} not found (shipped recipes: "
            f"{', '.join(recipe_names())})"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    return data


def parse_overrides(args: list[str]) -> dict[str, str]:
    """`--key value`, `--key=value` or `key=value` → {key: raw text}; `build_config` reads
    each text by its field's type, so a string option stays exactly as typed."""
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") and "=" in arg:
            key, raw = arg[2:].split("=", 1)
        elif arg.startswith("--"):
            key = arg[2:]
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise ConfigError(f"option --{key} needs a value")
            raw = args[i + 1]
            i += 1
        elif "=" in arg:
            key, raw = arg.split("=", 1)
        else:
            raise ConfigError(f"cannot read argument {arg!r}: use --key value or key=value")
        out[key.replace("-", "_")] = raw
        i += 1
    return out


_NULLS = ("null", "Null", "NULL", "~")


def parse_text(raw: str, hint: Any) -> Any:
    """A command-line value by its field's type: kept as text where the field takes a string
    (`{problem}`, `Note: answer in boxed`), YAML otherwise (`1e-3`, `[format, accuracy]`,
    `true`); `null` is None where the field allows None."""
    args = typing.get_args(hint)
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
    if optional and raw in _NULLS:
        return None
    options = [a for a in args if a is not type(None)] if optional else [hint]
    if any(o is str for o in options):
        return raw
    literals = [v for o in options if typing.get_origin(o) is typing.Literal for v in o.__args__]
    if raw in literals:
        return raw
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def load_config(
    cls: type[T], config: str | Path | None = None, overrides: list[str] | None = None
) -> T:
    """Build `cls` from an optional YAML file plus command-line overrides; overrides win."""
    values = read_yaml(config) if config is not None else {}
    source = str(config) if config is not None else "config"
    return build_config(cls, values, source=source, overrides=parse_overrides(overrides or []))


def build_config(
    cls: type[T],
    values: dict[str, Any],
    source: str = "config",
    overrides: dict[str, str] | None = None,
) -> T:
    """Validate keys and types of `values` (from `source`) and of the raw command-line
    `overrides` (read by `parse_text`) against the dataclass `cls`, then construct it."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    in_file: dict[str, Any] = {}
    given = [(k, v, f"in {source}", False) for k, v in values.items()]
    given += [(k, v, "on the command line", True) for k, v in (overrides or {}).items()]
    for key, value, where, raw in given:
        if key not in fields:
            near = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"unknown config key {key!r} {where}{hint}")
        value = parse_text(value, hints[key]) if raw else value
        kwargs[key] = _coerce(key, value, hints[key])
        if not raw:
            in_file[key] = kwargs[key]
    on_cli = set(overrides or {})
    _carry_followers(fields, kwargs, in_file, on_cli, source)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(_with_origins(str(err), in_file, on_cli, source)) from err


def _carry_followers(
    fields: dict[str, dataclasses.Field],
    kwargs: dict[str, Any],
    in_file: dict[str, Any],
    on_cli: set[str],
    source: str,
) -> None:
    """A field declared `follows=<list field>` holds one entry per item of that list: a list
    by position, or a mapping keyed by item. When the command line replaces the list but not
    the follower the file set, the follower is carried by name: a mapping keeps the entries
    whose key is still listed; a list is reordered and cut to the new items when they are a
    reordering or subset of the file's (or the default's) items, and refused otherwise, naming
    the file's values, since keeping it by position would give a value to another item."""
    for field in fields.values():
        leader = field.metadata.get("follows")
        if leader not in on_cli or field.name in on_cli or in_file.get(field.name) is None:
            continue
        value, new = in_file[field.name], kwargs[leader]
        old = in_file[leader] if leader in in_file else _default(fields[leader])
        if isinstance(value, dict):
            kwargs[field.name] = {k: v for k, v in value.items() if k in new}
            continue
        if len(value) != len(old) or len(set(new)) != len(new):
            continue  # the file disagrees with itself, or a repeat: the config refuses both
        if len(set(old)) == len(old) and set(new) <= set(old):
            kwargs[field.name] = [value[old.index(item)] for item in new]
            continue
        listed = "set" if leader in in_file else "left at its default"
        raise ConfigError(
            f"{leader} {new} on the command line is not a reordering or subset of {leader} "
            f"{old} ({listed} in {source}), so the {field.name} {value} that {source} gives "
            f"them by position cannot follow them by name: give --{field.name} too "
            f"({len(new)} entries, or null)"
        )


def _default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _with_origins(message: str, in_file: dict[str, Any], on_cli: set[str], source: str) -> str:
    """A refusal that names options the command line did not set says where they came from,
    so a cross-option error does not read as blaming an option the user never typed."""
    if not on_cli:
        return message
    named = [k for k in in_file if k not in on_cli and re.search(rf"\b{k}\b", message)]
    if not named:
        return message
    return (
        f"{message} [{', '.join(named)}: set in {source}; the command line set "
        f"{', '.join(sorted(on_cli))}]"
    )


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check `value` against a field type; ints become floats where a float is expected."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(key, value, option)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"config key {key!r}: bad value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key} must be one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            value = [value]  # a single value where a list is expected: `--reward_funcs format`
        item = args[0] if args else Any
        return [_coerce(key, v, item) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} must be a mapping, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as text
        try:
            return float(value)
        except ValueError:
            pass
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"config key {key!r} must be true or false, got {value!r}")
    if hint is int and isinstance(value, bool):
        raise ConfigError(f"config key {key!r} must be an integer, got {value!r}")
    if isinstance(hint, type) and not isinstance(value, hint):
        raise ConfigError(
            f"config key {key!r} must be of type {hint.__name__}, got {value!r} "
            f"({type(value).__name__})"
        )
    return value


def config_to_dict(config: Any) -> dict[str, Any]:
    """A plain dict of a config dataclass (for YAML dumps, model cards and checkpoints)."""
    return dataclasses.asdict(config)
