"""The geometry feature clusters start from: unit rows, their exact cosine kNN graph, and UMAP
embeddings of that graph.

For a seed, graph and embeddings are the same on every x86-64 CPU (AVX2 or AVX-512): the graph
is recomputed in float64 before it is rounded, and UMAP runs with numba kernels compiled for a
fixed target, a spectral initial layout and rounded curve parameters (sae_atlas.reproducible).
Cost: the graph n^2 d multiply-adds in blocks of KNN_BLOCK_ROWS rows (about 5 s for 16,000 x 576
on one thread); a UMAP 5-9 s on that graph, plus loading its numba kernels once per process
(7-10 s from the on-disk cache, 30-60 s compiling them on a fresh install).
"""

from __future__ import annotations

import warnings

import numpy as np

from sae_atlas.config import OrganizeConfig
from sae_atlas.reproducible import PORTABLE_CPU, curve_parameters, pin_numba_target, spectral_init

KNN_BLOCK_ROWS = 1024
"""Rows of cosines computed at a time by `cosine_knn` (memory: KNN_BLOCK_ROWS x n floats)."""


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """float32 [n, d]: rows scaled to unit length (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def cosine_knn(unit: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows of `unit` [n, d] by cosine, each row itself first.

    Returns indices int64 [n, k] and cosine distances (1 - cosine) float32 [n, k], nearest
    first, ties by index. A float32 matmul in blocks of KNN_BLOCK_ROWS rows (n^2 d
    multiply-adds) picks 2k candidates per row; their cosines are recomputed in float64 (n 2k d)
    and rounded to float32, so the graph does not depend on the CPU's BLAS kernel, whose float32
    rounding does (and which UMAP's layout amplifies).
    """
    n = len(unit)
    n_candidates = min(2 * k, n)
    unit64 = unit.astype(np.float64)
    indices = np.empty((n, k), dtype=np.int64)
    distances = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, KNN_BLOCK_ROWS):
        rows = np.arange(start, min(start + KNN_BLOCK_ROWS, n))
        cosine = unit[rows] @ unit.T
        cosine[np.arange(len(rows)), rows] = np.inf
        candidates = np.argpartition(-cosine, n_candidates - 1, axis=1)[:, :n_candidates]
        exact = np.stack(
            [np.einsum("ij,ij->i", unit64[rows], unit64[column]) for column in candidates.T], 1
        ).astype(np.float32)
        exact[candidates == rows[:, None]] = np.inf
        order = np.lexsort((candidates, -exact), axis=1)[:, :k]
        indices[rows] = np.take_along_axis(candidates, order, axis=1)
        distance = 1.0 - np.take_along_axis(exact, order, axis=1)
        distance[:, 0] = 0.0
        distances[rows] = np.clip(distance, 0.0, 2.0)
    return indices, distances


def embed(
    unit: np.ndarray,
    knn: tuple[np.ndarray, np.ndarray],
    n_components: int,
    min_dist: float,
    config: OrganizeConfig,
    seed: int,
) -> np.ndarray:
    """UMAP of `unit` [n, d] from its cosine kNN graph into float32 [n, n_components].

    The same on every x86-64 CPU for a seed (sae_atlas.reproducible): numba compiles UMAP's
    kernels for a fixed target, the layout starts from `spectral_init`, and UMAP's curve
    parameters are rounded."""
    if not pin_numba_target():
        warnings.warn(
            "organize: numba compiles for another CPU than the portable one, so UMAP's "
            "layouts may differ between CPU kinds; for the same layouts everywhere, set "
            f"NUMBA_CPU_NAME={PORTABLE_CPU} before Python starts",
            RuntimeWarning,
            stacklevel=2,
        )
    import umap

    a, b = curve_parameters(min_dist)
    reducer = umap.UMAP(
        n_neighbors=knn[0].shape[1],
        n_components=n_components,
        min_dist=min_dist,
        a=a,
        b=b,
        init=spectral_init(unit, knn, n_components, seed),
        metric="cosine",
        n_epochs=config.n_epochs,
        random_state=seed,
        n_jobs=config.n_jobs,
        low_memory=True,
        precomputed_knn=knn,
    )
    with warnings.catch_warnings():
        # the precomputed graph has no search index (no transform needed), and a fixed
        # random_state makes UMAP single-threaded: both are warned about and both are intended
        warnings.filterwarnings("ignore", category=UserWarning, module="umap")
        return np.asarray(reducer.fit_transform(unit), dtype=np.float32)
