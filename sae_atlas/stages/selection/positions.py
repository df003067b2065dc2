"""Position classes of a persona run: the system prompt, the user's turn, each token of the
assistant header (the template tokens between the user's message and the response: where the
model selects who speaks), and response tokens 1..N.

`header_length` counts the header's tokens from a prompt's roles; `position_index` names the
classes and gathers one residual vector per class from a run's activations (the mean over the
system prompt's and the user's tokens; one token for each header and response position). numpy:
microseconds per run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from feature_store.schema import ROLE_CODE
from sae_atlas.errors import SaeAtlasError


def header_length(roles: np.ndarray) -> int:
    """Template tokens after the last user token of a prompt's roles [n] (prompt with the
    generation header); SaeAtlasError when the prompt has no user token."""
    user = np.flatnonzero(roles == ROLE_CODE["user"])
    if not len(user):
        raise SaeAtlasError("a selection prompt needs a user turn")
    return int(len(roles) - user[-1] - 1)


@dataclass(frozen=True)
class PositionIndex:
    """Names of the position classes: system, user, header_0..header_{H-1}, response_1..N."""

    header: int
    n_response: int

    @property
    def names(self) -> list[str]:
        return [
            "system",
            "user",
            *(f"header_{i}" for i in range(self.header)),
            *(f"response_{t}" for t in range(1, self.n_response + 1)),
        ]

    def gather(
        self, acts: np.ndarray, roles: np.ndarray, prompt_length: int, n_new: int
    ) -> np.ndarray:
        """[n_positions, d] from one run's activations acts [>= prompt_length + n_new, d] and
        its prompt's roles [prompt_length]: NaN where the run has no such token."""
        out = np.full((len(self.names), acts.shape[1]), np.nan, dtype=np.float32)
        for k, role in enumerate(("system", "user")):
            rows = np.flatnonzero(roles[:prompt_length] == ROLE_CODE[role])
            if len(rows):
                out[k] = acts[rows].mean(0)
        for i in range(self.header):
            out[2 + i] = acts[prompt_length - self.header + i]
        for t in range(min(n_new, self.n_response)):
            out[2 + self.header + t] = acts[prompt_length + t]
        return out


def position_index(header: int, n_response: int) -> PositionIndex:
    return PositionIndex(header, n_response)
