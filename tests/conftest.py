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


@pytest.fixture(scope="session", autouse=True)
def probe_cache(tmp_path_factory):
    """dtype auto's CPU probe (sae_atlas.model.dtype) caches into a temporary folder."""
    patch = pytest.MonkeyPatch()
    patch.setenv("SAE_ATLAS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    yield
    patch.undo()
