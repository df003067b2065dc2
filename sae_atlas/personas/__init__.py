"""The persona catalogue: shipped personas and questions, loader, validator and importers.

`load_catalogue()` returns the shipped `Catalogue` (personas with system-prompt variants, questions
with a fixed train / held-out split, identity questions); `load_catalogue(path)` reads and
validates a user's YAML or JSON file; `import_assistant_axis(root)` reads the assistant-axis data.
"""

from __future__ import annotations

from sae_atlas.personas.catalogue import (
    CATEGORIES,
    DEFAULT_PERSONA_NAME,
    MIN_PROMPTS,
    SPLITS,
    Catalogue,
    CatalogueError,
    Persona,
    Question,
    Trigger,
    import_assistant_axis,
    load_catalogue,
    shipped_data_dir,
)

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
