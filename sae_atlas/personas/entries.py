"""The entries of a persona catalogue: personas (with their system-prompt variants and an
optional trigger wrapper), questions, and the names every catalogue shares (categories, splits,
the default persona). Plain immutable data; `CatalogueError` is the error every catalogue
problem raises.

A prompt of `None` means "no system message at all" (the chat template applies its own default);
a prompt of `""` means an explicitly empty system prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

from sae_atlas.errors import SaeAtlasError

CATEGORIES: tuple[str, ...] = (
    "default",
    "profession",
    "fictional",
    "nonhuman",
    "ai",
    "dark",
    "emotion",
    "conditional",
    "imported",
)
QUESTION_SPLITS: tuple[str, ...] = ("train", "heldout")
SPLITS: tuple[str, ...] = (*QUESTION_SPLITS, "identity")
MIN_PROMPTS = 5


class CatalogueError(SaeAtlasError):
    """A catalogue file or lookup is wrong; the message names the file, entry and field."""


@dataclass(frozen=True)
class Trigger:
    """A wrapper around the user's message under which a conditional persona appears."""

    open: str
    close: str = ""

    def wrap(self, text: str) -> str:
        """Return `text` inside the wrapper: open + text + close."""
        return f"{self.open}{text}{self.close}"


@dataclass(frozen=True)
class Persona:
    """A persona: its system-prompt variants (None = no system message, "" = empty prompt)."""

    name: str
    category: str
    description: str
    prompts: tuple[str | None, ...]
    trigger: Trigger | None = None


@dataclass(frozen=True)
class Question:
    """A user question; split is "train", "heldout" or "identity"."""

    id: str
    text: str
    split: str
