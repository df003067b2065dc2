"""The report's overview: the atlas's summary (`Atlas.info`), its SAE config, the SAE quality
numbers found in the SAE config and in the attributes about training and evaluation, and every
other build record stored as a JSON attribute. Cost: parsing the root attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from feature_store.atlas import Atlas
from sae_atlas.stages.report.document import MAX_TABLE_ROWS, Block, Heading, Table, fmt, text
from sae_atlas.stages.report.reading import flatten, json_attr

QUALITY_KEYS = ("explained_variance", "l0", "mse", "dead_fraction", "dense_fraction", "ce_", "kl")
"""Key prefixes of the SAE quality numbers looked for in the SAE config and evaluation attrs."""


def overview(atlas: Atlas) -> list[Block]:
    """The Overview section: what the atlas holds, its SAE config and quality numbers, and the
    build records stored as its attributes."""
    info = atlas.info()
    blocks: list[Block] = [Heading(2, "Overview", "overview")]
    rows = [(k, fmt(v)) for k, v in info.items() if k != "path"]
    if atlas.attrs.get("hook"):
        rows.insert(1, ("hook", fmt(atlas.attrs["hook"])))
    blocks.append(Table(("", "value"), tuple(rows)))
    sae_config = json_attr(atlas.file["sae"].attrs, "config")
    blocks.append(Heading(3, "SAE", "sae"))
    if sae_config:
        flat = flatten(sae_config)
        shown = [(k, fmt(v)) for k, v in flat.items() if fmt(v) != ""][:MAX_TABLE_ROWS]
        blocks.append(Table(("config", "value"), tuple(shown)))
    else:
        blocks.append(text("The atlas records no SAE config."))
    quality = sae_quality(atlas, sae_config)
    blocks.append(Heading(3, "SAE quality", "sae-quality"))
    if quality:
        blocks.append(Table(("measure", "value"), tuple(quality)))
    else:
        blocks.append(text("No SAE quality numbers are recorded in this atlas."))
    records = [k for k in sorted(atlas.attrs) if k != "config" and json_attr(atlas.attrs, k)]
    if records:
        blocks.append(Heading(3, "Build records", "build-records"))
        for key in records:
            flat = flatten(json_attr(atlas.attrs, key))
            shown = [(k, fmt(v)) for k, v in flat.items()][:MAX_TABLE_ROWS]
            more = f" (first {len(shown)} of {len(flat)})" if len(flat) > len(shown) else ""
            blocks += [text(f"{key}{more}:"), Table(("entry", "value"), tuple(shown))]
    return blocks


def sae_quality(atlas: Atlas, sae_config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """SAE quality numbers: matching keys of the SAE config and of attrs about evaluation."""
    sources = {"sae config": sae_config}
    for key in atlas.attrs:
        if any(word in key.lower() for word in ("eval", "quality", "train")):
            sources[key] = json_attr(atlas.attrs, key)
    rows = []
    for source, mapping in sources.items():
        for key, value in flatten(mapping).items():
            last = key.rsplit(".", 1)[-1].lower()
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if number and any(last.startswith(q) for q in QUALITY_KEYS):
                rows.append((f"{source}: {key}", fmt(value)))
    return rows
