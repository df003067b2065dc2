from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny():
    from sae_atlas.testing import tiny_handle

    return tiny_handle()


@pytest.fixture(scope="session")
def smollm():
    """The real default model, loaded once per test session (about 20 s)."""
    from sae_atlas.model import load_model

    return load_model()
