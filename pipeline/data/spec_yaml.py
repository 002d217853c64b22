"""An inferred spec as YAML text with a comment above each choice (pyyaml writes no comments):
one flow mapping per table and feature, as the hand-written specs in configs/features/ are."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import yaml

from pipeline.data.spec_choice import Choice

# -- YAML text ------------------------------------------------------------------------------------
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.<>/\-]*")


def yaml_str(s: str) -> str:
    """A plain scalar where YAML reads it back as this string, else a double-quoted one."""
    if _PLAIN.fullmatch(s):
        try:
            if yaml.safe_load(f"[{s}]") == [s]:
                return s
        except yaml.YAMLError:
            pass
    return json.dumps(s, ensure_ascii=False)


def yaml_float(x: float) -> str:
    """repr, with a '.0' where PyYAML (YAML 1.1) would read '1e-05' as a string."""
    if not math.isfinite(x):
        raise ValueError(f"not a finite number: {x}")
    r = repr(float(x))
    if "e" in r and "." not in r:
        mantissa, exp = r.split("e")
        r = f"{mantissa}.0e{exp}"
    return r


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return yaml_float(v)
    if isinstance(v, str):
        return yaml_str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} {v!r}")


def _flow(d: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{yaml_str(k)}: {_scalar(v)}" for k, v in d.items()) + "}"


def _comment(text: str) -> str:
    return re.sub(r"[\x00-\x1f\x7f\x85\u2028\u2029]", " ", text)


def render_spec(data: dict[str, Any], choices: list[Choice], header: list[str]) -> str:
    """The spec as YAML: one flow mapping per table, feature and task, a comment above each
    feature with what drove its choice, left-out columns listed with their reasons."""
    out = [f"# {_comment(line)}" for line in header]
    left = [ch for ch in choices if ch.role == "left out"]
    if left:
        out.append("# Left out:")
        out += [f"#   {_comment(ch.column)}: {_comment(ch.why)}" for ch in left]
    out.append(f"name: {_scalar(data['name'])}")
    why = {ch.column: ch.why for ch in choices}
    out.append("tables:")
    for ch in choices:
        if ch.table is not None:
            out.append(f"  - {_flow(ch.table)}")
    out.append("sparse:")
    for f in data["sparse"]:
        out.append(f"  # {_comment(f['column'])}: {_comment(why[f['column']])}")
        out.append(f"  - {_flow(f)}")
    if data["dense"]:
        out.append("dense:")
        for f in data["dense"]:
            out.append(f"  # {_comment(f['column'])}: {_comment(why[f['column']])}")
            out.append(f"  - {_flow(f)}")
    else:
        out.append("dense: []")
    for label in data["labels"]:
        out.append(f"# {_comment(label)}: {_comment(why.get(label, ''))}")
    out.append(f"labels: {_scalar(data['labels'])}")
    out.append("tasks:")
    out += [f"  - {_flow(t)}" for t in data["tasks"]]
    if "group_by" in data:
        out.append(f"group_by: {_scalar(data['group_by'])}")
    return "\n".join(out) + "\n"
