"""Persona selection at the assistant header, and carry-through into the response.

Where along a persona run (system prompt, user turn, each header token, response tokens 1..N) the
persona can be read from the residual and from the SAE's features, cross-fitted over prompt
variants and questions (`decoding`); whether the header's residual carries it causally, by
patches between persona and default runs against matched non-header patches and patches from
another persona (`patching`); how fast the response relaxes toward the assistant (`relaxation`).
`run_selection` (`experiment`) runs it all on a built run; the runs themselves (grid, sampling
with patches, reading) are `runs`, the position classes `positions`; `figures` draws the
report's figures from the tables. scripts/persona_selection.py is the command.
"""

from sae_atlas.stages.selection.experiment import (
    SelectionConfig,
    SelectionResult,
    run_selection,
)

__all__ = ["SelectionConfig", "SelectionResult", "run_selection"]
