"""Loading a job's YAML config: the file, dotted command-line overrides
(`train.batch_size=2048`), and pydantic validation whose errors name every bad key. Each
job's own sections live in its room (`pipeline/train/config.py`, `pipeline/score/config.py`,
...); this is what they share."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from pipeline.common.errors import BadInputError

Model = TypeVar("Model", bound=BaseModel)


class _ConfigLoader(yaml.SafeLoader):
    """YAML as configs use it: a date such as 2026-01-01 stays the string it was typed as (days
    are strings everywhere here), in files and in overrides alike."""


_ConfigLoader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_yaml(text: str):
    """A config value or document (see _ConfigLoader)."""
    return yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader subclass: no arbitrary objects


class ConfigError(BadInputError):
    """A config file, key or override that cannot be used; the message names it."""


class StrictModel(BaseModel):
    """A config section: an unknown key is an error (a typo must not pass as a default)."""

    model_config = ConfigDict(extra="forbid")


def set_dotted(data: dict, dotted: str) -> None:
    """Apply one `a.b.c=VALUE` override to `data` in place (VALUE parsed as YAML)."""
    if "=" not in dotted:
        raise ConfigError(f"override '{dotted}' is not KEY=VALUE (e.g. train.batch_size=2048)")
    key, value = dotted.split("=", 1)
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{key}': '{part}' is not a section")
    try:
        node[parts[-1]] = load_yaml(value)
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{key}': cannot read the value {value!r}: {err}") from None


def deep_merge(base: dict, over: dict) -> dict:
    """`base` with `over` laid on top: sections merge key by key, any other value replaces."""
    out = dict(base)
    for key, value in over.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """One config file; `extends: other.yaml` (relative to this file) starts it from that one's
    values, so that a config differs from its base only where it says so."""
    if path.resolve() in seen:
        raise ConfigError(f"{path}: `extends` loops: {' -> '.join(map(str, (*seen, path.resolve())))}")
    try:
        data = load_yaml(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read config: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config is a mapping of sections, not {type(data).__name__}")
    base = data.pop("extends", None)
    if base is None:
        return data
    return deep_merge(_read_yaml(path.parent / str(base), (*seen, path.resolve())), data)


def read_config_dict(path: str | Path | None, overrides: Sequence[str] = ()) -> dict:
    """The YAML at `path` (None: empty; `extends:` resolved) with dotted overrides applied, not
    yet validated."""
    data = _read_yaml(Path(path)) if path is not None else {}
    for item in overrides:
        set_dotted(data, item)
    return data


def validated(
    model: type[Model], data: dict, path: str | Path | None, what: str = "config", drop_prefix: str | None = None
) -> Model:
    """`model.model_validate(data)`, with errors turned into one ConfigError naming every bad
    key (`drop_prefix`: a wrapper section the user did not write, left out of key names)."""
    try:
        return model.model_validate(data)
    except ValidationError as err:

        def key(loc: tuple) -> str:
            loc = loc[1:] if drop_prefix and loc and loc[0] == drop_prefix else loc
            return ".".join(str(p) for p in loc) or "<root>"

        def got(e: ErrorDetails) -> str:  # the value given, unless it is a whole section
            return "" if isinstance(e.get("input"), dict) else f" (got {e.get('input')!r})"

        def message(e: ErrorDetails) -> str:
            if e["type"] != "extra_forbidden":
                return e["msg"].removeprefix("Value error, ")  # the message of one of our validators
            section = key(e["loc"][:-1])
            return unknown_key(model, e["loc"], "" if section == "<root>" else section)

        lines = [f"{key(e['loc'])}: {message(e)}{got(e)}" for e in err.errors()]
        raise ConfigError(f"{path or '<defaults>'}: invalid {what}\n  " + "\n  ".join(lines)) from None


def unknown_key(model: type[BaseModel], loc: tuple, section: str) -> str:
    """pydantic's "Extra inputs are not permitted" for the key at `loc` (a validation error's
    location in `model`), said usefully: the closest key its section accepts ("did you mean
    train.batch_size?"), else the keys it accepts. `section`: how the section's path reads in
    the message ("" at the top level)."""
    known = _keys_of(model, loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    if close:
        return f"unknown key: did you mean {section + '.' if section else ''}{close[0]}?"
    return f"unknown key ({section or 'the top level'} has: {', '.join(known)})" if known else "unknown key"


def _keys_of(model: Any, section: tuple) -> list[str]:
    """The keys the section at `section` accepts (its model's fields), [] where the path leads
    to no model (into a dict, say)."""
    for part in section:
        if isinstance(part, int):  # an item of a list of sections: the list's item model, found already
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        model = _model_in(field.annotation)
        if model is None:
            return []
    return list(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation holds: X, X | None, list[X]."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for a in get_args(annotation) if (m := _model_in(a)) is not None), None)


def differences(there: Any, now: Any, key: str = "") -> list[str]:
    """Where two settings differ, one `key: A there, B now` per differing value: sections by
    their dotted keys, a list of named sections (feature-spec tables, features, tasks) by name
    (`tables[category].hash_buckets`; `dense[price] added` or `removed`), any other value whole."""
    if isinstance(there, dict) and isinstance(now, dict):
        keys = list(there) + [k for k in now if k not in there]
        return [d for k in keys for d in differences(there.get(k), now.get(k), f"{key}.{k}" if key else str(k))]
    if _named(there) and _named(now):
        there_by, now_by = ({s["name"]: s for s in sections} for sections in (there, now))
        added = [f"{key}[{n}] added" for n in now_by if n not in there_by]
        removed = [f"{key}[{n}] removed" for n in there_by if n not in now_by]
        both = [n for n in there_by if n in now_by]
        return removed + added + [d for n in both for d in differences(there_by[n], now_by[n], f"{key}[{n}]")]
    return [] if there == now else [f"{key}: {_said(there)} there, {_said(now)} now"]


def _named(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, dict) and "name" in v for v in value)


def _said(value: Any) -> str:
    return "not set" if value is None else repr(value)
