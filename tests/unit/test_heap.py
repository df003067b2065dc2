"""sae_atlas.heap: the free-page hand-back runs in heap mode release only."""

from __future__ import annotations

import pytest

from sae_atlas import heap


def test_the_hand_back_runs_only_in_release_mode(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(heap, "_malloc_trim", lambda: calls.append)
    heap.release_free_heap()
    assert calls == [0]
    try:
        heap.set_heap_mode("dynamic")
        heap.release_free_heap()
        assert calls == [0]
    finally:
        heap.set_heap_mode("release")
    heap.release_free_heap()
    assert calls == [0, 0]
    with pytest.raises(ValueError, match="choose one of release, dynamic, fixed"):
        heap.set_heap_mode("tiny")
