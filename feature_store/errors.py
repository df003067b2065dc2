"""The one error type of feature_store: a problem with a file the user can act on."""

from __future__ import annotations


class StoreError(ValueError):
    """A store file is missing, of the wrong kind or version, damaged, or would be overwritten.

    The message says which file, what is wrong and what to do, on one line.
    """
