"""The error a user can act on: what was wrong, where, and what to do, on one line."""

from __future__ import annotations


class SaeAtlasError(ValueError):
    """A bad input or state the user can fix; the CLI prints it on one line and exits with 2."""
