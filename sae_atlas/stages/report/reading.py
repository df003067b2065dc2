"""Reading what an atlas records beyond its tables: JSON attributes, nested records flattened
for display, ';'-separated persona lists, and the default persona. Cost: parsing short strings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sae_atlas.stages.report.document import fmt


def json_attr(attrs: Mapping[str, Any], key: str) -> dict[str, Any]:
    """attrs[key] parsed as a JSON object; {} when absent or not a JSON object."""
    value = attrs.get(key)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return {}
    try:
        parsed = json.loads(value)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalars of a nested mapping under dotted keys (lists of scalars joined, others skipped)."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out |= flatten(value, name + ".")
        elif isinstance(value, list):
            if len(value) <= 10 and all(not isinstance(v, dict | list) for v in value):
                out[name] = fmt(value)
        else:
            out[name] = value
    return out


def parse_personas(listed: str) -> list[tuple[str, float]]:
    """[('pirate', 0.93), ...] from 'pirate:0.93;villain:0.71'."""
    pairs = []
    for item in listed.split(";"):
        name, _, score = item.rpartition(":")
        if name:
            try:
                pairs.append((name, float(score)))
            except ValueError:
                pairs.append((item, float("nan")))
    return pairs
