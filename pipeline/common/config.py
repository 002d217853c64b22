"""Loading a job's YAML config: the file, dotted command-line overrides
(`train.batch_size=2048`), and pydantic validation whose errors name every bad key. Each
job's own sections live in its room (`pipeline/train/config.py`, `pipeline/score/config.py`,
...); this is what they share."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

Model = TypeVar("Model", bound=BaseModel)


class ConfigError(ValueError):
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
    node[parts[-1]] = yaml.safe_load(value)


def read_config_dict(path: str | Path | None, overrides: Sequence[str] = ()) -> dict:
    """The YAML at `path` (None: empty) with dotted overrides applied, not yet validated."""
    data: dict = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"{path}: cannot read config: {err}") from None
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

        lines = [f"{key(e['loc'])}: {e['msg']}" for e in err.errors()]
        raise ConfigError(f"{path or '<defaults>'}: invalid {what}\n  " + "\n  ".join(lines)) from None
