"""The report as data: a list of blocks (`Heading`, `Text`, `Table`, `Figure`) whose cells are
text, links to #anchors in the same report, link targets and marked example contexts. Both
renderers (`render`) read only these, so the HTML page and the Markdown file cannot disagree.

Also the small text helpers the sections share: value formatting, plurals, marked contexts.
Costs nothing beyond building the lists.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

MAX_TABLE_ROWS = 50
"""Rows shown of any other table (puppeteer features, dynamics tables)."""


@dataclass(frozen=True)
class Link:
    """Text linking to the #anchor of a section in the same report."""

    text: str
    anchor: str


@dataclass(frozen=True)
class Target:
    """Text that is itself the target of `anchor` (a table row other sections link to)."""

    text: str
    anchor: str


@dataclass(frozen=True)
class Context:
    """An example context: text with the feature's token marked as [[token]]."""

    text: str


Part = str | Link


@dataclass(frozen=True)
class Text:
    """A paragraph: plain text and links."""

    parts: tuple[Part, ...]


@dataclass(frozen=True)
class Heading:
    """A section heading (level 2: a section, 3: a subsection) and its #anchor."""

    level: int
    text: str
    anchor: str


Cell = str | Link | Target | Context | Text


@dataclass(frozen=True)
class Table:
    """A table: its header and rows of cells."""

    header: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]


@dataclass(frozen=True)
class Figure:
    """A figure: its file name (without .png), PNG bytes and caption."""

    name: str
    png: bytes
    caption: str


Block = Heading | Text | Table | Figure


def text(*parts: Part) -> Text:
    """A paragraph of `parts`."""
    return Text(tuple(parts))


def table(frame: pd.DataFrame, cells: Mapping[str, Callable[[Any], Cell]] | None = None) -> Table:
    """A Table of `frame`'s columns; `cells` maps a column to a function making its cells."""
    cells = cells or {}
    columns = [str(c) for c in frame.columns]
    rows = tuple(
        tuple(cells.get(c, fmt)(value) for c, value in zip(columns, values, strict=True))
        for values in frame.itertuples(index=False, name=None)
    )
    return Table(tuple(columns), rows)


def head_table(frame: pd.DataFrame, columns: list[str] | None = None) -> list[Block]:
    """A line saying how many rows `frame` has and a table of its first MAX_TABLE_ROWS (only
    the `columns` it has, when given); 'No rows.' when it is empty."""
    if columns is not None:
        frame = frame[[c for c in columns if c in frame.columns]]
    if frame.empty:
        return [text("No rows.")]
    shown = frame.head(MAX_TABLE_ROWS)
    more = f", first {len(shown)} shown" if len(shown) < len(frame) else ""
    return [text(f"{len(frame)} rows{more}."), table(shown)]


def fmt(value: Any) -> str:
    """A value as short text: floats to 3 significant digits, NaN and None as ''."""
    if value is None:
        return ""
    if isinstance(value, float | np.floating):
        return "" if math.isnan(value) else f"{value:.3g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {fmt(v)}" for k, v in value.items())
    if isinstance(value, list | tuple | np.ndarray):
        return ", ".join(fmt(v) for v in value)
    return str(value)


def plural(count: int, noun: str) -> str:
    """'1 feature', '2 features'."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


def split_context(context: str) -> tuple[str, str, str]:
    """(before, token, after) of a context marked 'before[[token]]after'; no mark: (all, '', '')."""
    match = re.search(r"\[\[(.*?)\]\]", context, flags=re.DOTALL)
    if match is None:
        return context, "", ""
    return context[: match.start()], match.group(1), context[match.end() :]


def visible(piece: str) -> str:
    """Newlines shown as ↵ so that a context stays on one line."""
    return piece.replace("\r", "").replace("\n", "↵")
