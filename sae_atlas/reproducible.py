"""UMAP and HDBSCAN as organize runs them, with the same result for a seed on every x86-64 CPU.

Measured on the planted-group test data and on 16,000 synthetic decoder rows, with one lever
of the CPU changed at a time (OpenBLAS's kernel by OPENBLAS_CORETYPE, numpy's SIMD loops by
NPY_DISABLE_CPU_FEATURES, the host CPU numba sees), a seeded UMAP + HDBSCAN gave other clusters
on an AVX2 CPU than on an AVX-512 one through each of these, as the layout's SGD turns a last
bit into another embedding; each is removed here (the kNN graph's, by organize.cosine_knn):
- numba compiles UMAP's kernels for the host CPU with fastmath: where LLVM tunes for 512-bit
  vectors (AMD Zen 4, for one) float sums are reassociated otherwise. `pin_numba_target` makes
  it compile for PORTABLE_CPU, the baseline every x86-64 CPU runs (UMAP's layout measured as
  fast), unless the user set NUMBA_CPU_NAME; it must run before numba compiles anything in the
  process, and a fresh numba cache then compiles UMAP's kernels once (30-60 s).
- UMAP's spectral initialisation goes through ARPACK and the CPU's BLAS kernels, and its
  near-degenerate eigenvalues turn their last-bit differences into relative ones of 1e-9
  (16,000 rows: 133 of 160,000 float32 coordinates differed). `spectral_init` approximates the
  same eigenvectors by sparse products and Gram-Schmidt alone, which no kernel choice changes
  (on the benchmark of scripts/bench_organize.py as good as UMAP's: every planted group found,
  as stable; a random start gave more spurious clusters among scattered features).
- UMAP fits its curve parameters a, b with numpy's SIMD exp and power, whose last bits differ:
  `curve_parameters` rounds them to CURVE_DECIMALS.
- HDBSCAN sorts the minimum spanning tree's edges with numpy's unstable sort, whose SIMD kernels
  order edges of equal weight (common: mutual reachability is often a core distance) otherwise:
  `hdbscan_clusters` merges them in a canonical order.
"""

from __future__ import annotations

import os

import numpy as np

PORTABLE_CPU = "generic"
"""numba's (LLVM's) name for the baseline of the host's architecture; no optional features."""
CURVE_DECIMALS = 6
"""Decimals kept of UMAP's curve parameters a, b (they differ from the 10th digit on)."""
SPECTRAL_ITERATIONS = 30
"""Steps of orthogonal iteration in `spectral_init`: directions whose lazy-walk eigenvalue is
below 0.5 shrink by 1e-9, those of slowly mixing groups of rows stay."""
HDBSCAN_LEAF_SIZE = 40
"""HDBSCAN's default KD-tree leaf size."""


def pin_numba_target() -> bool:
    """Make numba compile for PORTABLE_CPU unless NUMBA_CPU_NAME is set; True when it does.

    False when the user chose another target or numba had compiled code for the host before
    this call (its target is fixed then): UMAP's layouts may then differ between CPU kinds."""
    os.environ.setdefault("NUMBA_CPU_NAME", PORTABLE_CPU)
    from numba.core import config
    from numba.core.registry import cpu_target

    config.reload_config()
    _, cpu_name, features = cpu_target.target_context.codegen().magic_tuple()
    return cpu_name == PORTABLE_CPU and features == ""


def curve_parameters(min_dist: float) -> tuple[float, float]:
    """UMAP's a, b for `min_dist` (spread 1), rounded to CURVE_DECIMALS."""
    from umap.umap_ import find_ab_params

    a, b = find_ab_params(1.0, min_dist)
    return round(float(a), CURVE_DECIMALS), round(float(b), CURVE_DECIMALS)


def spectral_init(
    unit: np.ndarray, knn: tuple[np.ndarray, np.ndarray], dims: int, seed: int
) -> np.ndarray:
    """float32 [n, dims]: where UMAP's layout of `unit` [n, d] starts, from its cosine kNN
    graph `knn` (indices, distances [n, k]).

    UMAP's fuzzy graph W [n, n] (degrees D) gives the normalised adjacency N = D^-1/2 W D^-1/2;
    SPECTRAL_ITERATIONS steps of orthogonal iteration of the lazy walk (I + N) / 2, from the
    trivial eigenvector sqrt(D) and `dims` seeded Gaussian vectors, approximate its leading
    eigenvectors after the trivial one (the spectral embedding UMAP starts from). Every degree
    is at least 1 (a row's nearest neighbour has membership 1). float64 sparse products and
    Gram-Schmidt: about (nnz + n dims) dims operations a step."""
    from umap.umap_ import fuzzy_simplicial_set

    graph = fuzzy_simplicial_set(
        unit, knn[0].shape[1], None, "cosine", knn_indices=knn[0], knn_dists=knn[1]
    )[0].tocsr()
    degree = np.asarray(graph.sum(axis=1)).ravel()
    scale = 1.0 / np.sqrt(degree)
    normalised = graph.multiply(scale[:, None]).multiply(scale[None, :]).tocsr()
    basis = np.random.default_rng(seed).standard_normal((dims + 1, len(degree)))
    basis[0] = np.sqrt(degree)
    for _ in range(SPECTRAL_ITERATIONS):
        basis = 0.5 * (basis + (normalised @ basis.T).T)
        for j in range(dims + 1):
            for i in range(j):
                basis[j] -= (basis[i] * basis[j]).sum() * basis[i]
            basis[j] /= np.sqrt((basis[j] * basis[j]).sum())
    return basis[1:].T.astype(np.float32)


def hdbscan_clusters(
    points: np.ndarray, min_cluster_size: int, min_samples: int, selection: str, n_jobs: int
) -> np.ndarray:
    """int64 [n]: HDBSCAN's clusters of `points` [n, dims] (Euclidean; -1: noise), computed as
    hdbscan.HDBSCAN computes them for up to 60 dims (approximate Boruvka minimum spanning tree
    on a KD-tree), except that edges of equal weight join in the order of their end points.
    Built from hdbscan's own internals (constraints.txt pins its version)."""
    from hdbscan._hdbscan_boruvka import KDTreeBoruvkaAlgorithm
    from hdbscan._hdbscan_linkage import label
    from hdbscan.hdbscan_ import _tree_to_labels
    from sklearn.neighbors import KDTree

    points = np.ascontiguousarray(points, dtype=np.float64)
    boruvka = KDTreeBoruvkaAlgorithm(
        KDTree(points, metric="euclidean", leaf_size=HDBSCAN_LEAF_SIZE),
        max(min(len(points) - 1, min_samples), 1),
        metric="euclidean",
        leaf_size=HDBSCAN_LEAF_SIZE // 3,
        approx_min_span_tree=True,
        n_jobs=n_jobs,
    )
    edges = boruvka.spanning_tree()
    ends = np.sort(edges[:, :2], axis=1)
    edges = edges[np.lexsort((ends[:, 1], ends[:, 0], edges[:, 2]))]
    labels = _tree_to_labels(
        points, label(edges), min_cluster_size=min_cluster_size, cluster_selection_method=selection
    )[0]
    return np.asarray(labels, dtype=np.int64)
