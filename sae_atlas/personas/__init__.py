"""The persona catalogue: shipped personas and questions, loader, validator and importers.

`load_catalogue()` (`loading`) returns the shipped `Catalogue` (`catalogue`: personas with
system-prompt variants, questions with a fixed train / held-out split, identity questions, the
entries of `entries`); `load_catalogue(path)` reads and validates (`validation`) a user's YAML or
JSON file or an Assistant Axis folder; `import_assistant_axis(root)` (`importers`) reads the
assistant-axis data.
"""

from __future__ import annotations

from feature_store.schema import DEFAULT_PERSONA_NAME
from sae_atlas.personas.catalogue import Catalogue, shipped_data_dir
from sae_atlas.personas.entries import (
    CATEGORIES,
    MIN_PROMPTS,
    SPLITS,
    CatalogueError,
    Persona,
    Question,
    Trigger,
)
from sae_atlas.personas.importers import import_assistant_axis
from sae_atlas.personas.loading import load_catalogue

__all__ = [
    "CATEGORIES",
    "DEFAULT_PERSONA_NAME",
    "MIN_PROMPTS",
    "SPLITS",
    "Catalogue",
    "CatalogueError",
    "Persona",
    "Question",
    "Trigger",
    "import_assistant_axis",
    "load_catalogue",
    "shipped_data_dir",
]
