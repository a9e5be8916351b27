"""Pseudo-labels for unsupervised domain adaptation: k-reciprocal Jaccard distance + DBSCAN (MMT,
Ge et al. ICLR 2020; OpenUnReID's ``label_generators/dbscan.py``), on sparse distances.

features -> :func:`~fastreid_ext.uda.jaccard.jaccard_distance` (sparse, equal to FastReID's dense
one) -> eps (fixed, or :func:`select_eps` at the first call) -> :func:`dbscan_labels` (scikit-learn
DBSCAN, ``metric="precomputed"``, on the sparse matrix) -> labels (-1 = outlier, dropped by the
caller) and :func:`cluster_centroids` for the classifier re-initialisation. One call is
:func:`generate_pseudo_labels`, a pure function (features in, labels and statistics out,
deterministic for a given machine), so in multi-process training rank 0 computes and broadcasts.
:class:`DBSCANPseudoLabeler` is the per-epoch callable a trainer hook holds: it remembers the eps
chosen at its first call (MMT chooses it at epoch 0 and keeps it) and logs one line per call.

Choices, and how the sparse form keeps the reference's results:

- **Exactness of DBSCAN.** A pair absent from the sparse matrix has Jaccard distance exactly 1 in
  the dense reference. With ``0 < eps < 1`` such a pair is never a neighbour, so DBSCAN on the
  sparse matrix (after dropping the stored entries above eps, which changes nothing either) sees
  the same eps-neighbourhoods as on the dense one, hence the same core points and the same labels
  (scikit-learn numbers clusters in the order of their first core point and gives a border point
  to the first cluster that reaches it; neither depends on the neighbour order). ``eps >= 1`` is
  refused (it would make every pair a neighbour). Stored zero distances (duplicates) stay explicit
  entries, so they remain neighbours; the diagonal is always stored (explicitly 1.0 for an isolated
  point, as in the reference), so scikit-learn's ``setdiag`` does not invent a self-neighbour.
- **eps from the distance distribution** (MMT ``mmt_train_dbscan.py``: ``tri_mat = np.triu(dist,
  1); tri_mat = tri_mat[np.nonzero(tri_mat)]; top_num = np.round(rho * tri_mat.size); eps =
  mean(sorted(tri_mat)[:top_num])``, rho = 1.6e-3). :func:`select_eps` computes *the same number*
  from the sparse matrix: the population is the N (N - 1) / 2 pairs i < j minus those at distance
  exactly 0; the absent pairs are all at distance 1.0, the largest possible value, so the smallest
  ``top_num`` values are the smallest stored upper-triangle non-zero values, padded with 1.0 when
  fewer are stored. Note that ``top_num`` grows with N^2 (about rho N / 2 pairs per point).
- **No cluster** (every point an outlier; the same thing for DBSCAN) raises
  :class:`NoClustersError`, which names eps and min_samples and shows the quantiles of the *core
  distance* (each point's distance to its (min_samples - 1)-th nearest other point: a point is a
  core point iff it is <= eps) with a suggested eps (their median: about half the points become
  core points).
- **Logged statistics** (:attr:`PseudoLabels.stats`): clusters, outliers, cluster sizes, eps and
  how it was chosen, seconds per step, peak resident memory growth of the call (sampled every
  10 ms), stored pairs per point, and NMI / ARI against true labels when the caller passes them
  (logging only; outliers count as singleton clusters there, so dropping points is not rewarded).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import resource
import threading
import time

import numpy as np
import scipy.sparse as sp

from ..errors import UserError
from .jaccard import jaccard_distance

__all__ = ["NoClustersError", "PseudoLabels", "DBSCANPseudoLabeler", "generate_pseudo_labels", "select_eps",
           "dbscan_labels", "distance_quantiles", "cluster_centroids", "label_quality", "format_stats"]

logger = logging.getLogger(__name__)

#: MMT / OpenUnReID: eps = mean of the smallest rho of the pairwise distances
DEFAULT_RHO = 1.6e-3


class NoClustersError(UserError):
    """DBSCAN put every point in the outliers (no cluster) at the given eps."""


def _upper(dist: sp.spmatrix) -> np.ndarray:
    coo = dist.tocoo()
    return coo.data[coo.row < coo.col]


def select_eps(dist: sp.spmatrix, rho: float = DEFAULT_RHO) -> float:
    """MMT's eps: the mean of the smallest ``rho`` fraction of the non-zero pairwise distances
    (i < j) of the Jaccard matrix, computed from the sparse matrix (absent pairs are 1.0)."""
    if not 0 < rho < 1:
        raise ValueError(f"rho must be in (0, 1), got {rho}")
    n = dist.shape[0]
    u = _upper(dist)
    nonzero = u[u != 0]
    size = n * (n - 1) // 2 - (len(u) - len(nonzero))
    top = int(np.round(rho * size))
    if top < 1:
        raise ValueError(f"rho={rho} selects no pair among {size} pairwise distances of {n} points: "
                         f"use a larger rho or a fixed eps")
    if top <= len(nonzero):
        smallest = np.partition(nonzero, top - 1)[:top] if top < len(nonzero) else nonzero
        return float(smallest.astype(np.float64).sum() / top)
    return float((nonzero.astype(np.float64).sum() + (top - len(nonzero))) / top)


def _core_distances(dist: sp.spmatrix, min_samples: int) -> np.ndarray:
    """Each point's distance to its (min_samples - 1)-th nearest *other* point (1.0 if not stored)."""
    coo = dist.tocoo()
    keep = coo.row != coo.col
    rows, data = coo.row[keep], coo.data[keep]
    n = dist.shape[0]
    m = min_samples - 1
    out = np.ones(n, dtype=np.float64)
    if m < 1:
        return np.zeros(n)
    order = np.lexsort((data, rows))
    rows, data = rows[order], data[order]
    starts = np.searchsorted(rows, np.arange(n))
    counts = np.bincount(rows, minlength=n)
    has = counts >= m
    out[has] = data[starts[has] + m - 1]
    return out


def distance_quantiles(dist: sp.spmatrix, min_samples: int = 4,
                       qs=(0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)) -> dict:
    """Quantiles of the core distance (see :func:`_core_distances`): with eps at the q-quantile,
    a fraction q of the points are DBSCAN core points. Keys ``"q50"`` etc."""
    core = _core_distances(dist, min_samples)
    return {f"q{round(q * 100):g}": float(np.quantile(core, q)) for q in qs}


def _ordinal(k: int) -> str:
    return f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"


def _no_clusters_message(dist, eps, min_samples, rho) -> str:
    qd = distance_quantiles(dist, min_samples)
    shown = ", ".join(f"{k[1:]}%: {v:.3f}" for k, v in qd.items())
    try:
        rho_eps = f"; the distribution rule (eps unset, rho={rho:g}) gives {select_eps(dist, rho):.3f}"
    except ValueError:
        rho_eps = ""
    suggestion = qd["q50"]
    if suggestion >= 1:
        advice = ("most points share no k-reciprocal neighbours at all (core distance 1.0): the features "
                  "do not form clusters; check the feature extractor or lower min_samples")
    else:
        advice = f"suggested eps: {np.ceil(suggestion * 1000) / 1000:.3f} (about half the points become core points)"
    return (f"DBSCAN found no cluster: all {dist.shape[0]} points are outliers at eps={eps:.4g} "
            f"(min_samples={min_samples}). A point is a core point when its {_ordinal(min_samples - 1)} nearest other "
            f"point is within eps; that Jaccard distance has quantiles {shown}. {advice}{rho_eps}.")


def dbscan_labels(dist: sp.spmatrix, eps: float, min_samples: int = 4) -> np.ndarray:
    """scikit-learn DBSCAN (``metric="precomputed"``) on a sparse Jaccard matrix whose absent entries
    mean distance 1.0; labels (N,) int64, -1 = outlier. Equal to DBSCAN on the dense matrix for
    ``0 < eps < 1``. Raises :class:`NoClustersError` when every point is an outlier."""
    from sklearn.cluster import DBSCAN

    if not 0 < eps < 1:
        raise ValueError(f"eps must be in (0, 1) for Jaccard distances (absent pairs are at 1.0), got {eps}")
    if min_samples < 1:
        raise ValueError(f"min_samples must be >= 1, got {min_samples}")
    dist = sp.csr_matrix(dist)
    rows = np.repeat(np.arange(dist.shape[0], dtype=dist.indices.dtype), np.diff(dist.indptr))
    keep = (dist.data <= eps) | (dist.indices == rows)  # neighbours only; the diagonal always explicit
    del rows
    indptr = np.concatenate([[0], np.cumsum(keep)])[dist.indptr]
    graph = sp.csr_matrix((dist.data[keep], dist.indices[keep], indptr), shape=dist.shape)
    labels = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(graph)
    if labels.max(initial=-1) < 0:
        raise NoClustersError(_no_clusters_message(dist, eps, min_samples, DEFAULT_RHO))
    return labels.astype(np.int64)


def label_quality(labels: np.ndarray, true_labels) -> dict:
    """NMI and ARI of pseudo-labels against true labels (for logging only; outliers are singletons)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    labels = np.asarray(labels).copy()
    true_labels = np.asarray(true_labels)
    if true_labels.shape != labels.shape:
        raise ValueError(f"true_labels has shape {true_labels.shape}, labels {labels.shape}")
    out = labels < 0
    labels[out] = labels.max(initial=-1) + 1 + np.arange(out.sum())
    return {"nmi": float(normalized_mutual_info_score(true_labels, labels)),
            "ari": float(adjusted_rand_score(true_labels, labels))}


def cluster_centroids(features, labels, normalize: bool = True):
    """(num_clusters, D) mean feature of each cluster (labels 0..C-1; -1 ignored), L2-normalised
    when ``normalize`` (MMT's classifier re-initialisation). Torch in -> torch out on the same
    device and dtype; numpy in -> float32 numpy out."""
    labels_np = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels).astype(np.int64).ravel()
    num = int(labels_np.max(initial=-1)) + 1
    counts = np.bincount(labels_np[labels_np >= 0], minlength=num)
    if num == 0:
        raise ValueError("no cluster: every label is -1")
    if (counts == 0).any():
        raise ValueError(f"labels must be 0..C-1 without gaps; cluster(s) {np.flatnonzero(counts == 0)[:5].tolist()} "
                         f"are empty")
    if len(labels_np) != features.shape[0]:
        raise ValueError(f"{len(labels_np)} labels for {features.shape[0]} features")
    keep = np.flatnonzero(labels_np >= 0)
    if hasattr(features, "detach"):
        import torch

        f = features.detach()
        idx = torch.from_numpy(keep).to(f.device)
        lab = torch.from_numpy(labels_np[keep]).to(f.device)
        sums = torch.zeros(num, f.shape[1], device=f.device, dtype=torch.float32)
        sums.index_add_(0, lab, f.index_select(0, idx).float())
        cent = sums / torch.from_numpy(counts).to(f.device, torch.float32).unsqueeze(1)
        if normalize:
            cent = torch.nn.functional.normalize(cent, dim=1)
        return cent.to(f.dtype)
    f = np.asarray(features, dtype=np.float32)
    member = sp.csr_matrix((np.ones(len(keep), np.float32), (labels_np[keep], keep)), shape=(num, f.shape[0]))
    cent = np.asarray(member @ f, dtype=np.float32) / counts[:, None].astype(np.float32)
    if normalize:
        cent /= np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-12)
    return cent


class _PeakRSS:
    """Peak resident-set growth (MiB) over a ``with`` block, sampled every ``interval`` seconds from
    /proc/self/statm (Linux; elsewhere the process's ``ru_maxrss`` growth, which misses peaks below
    an earlier one)."""

    def __init__(self, interval: float = 0.01):
        self.interval, self.peak_mb = interval, 0.0
        self._stop = threading.Event()

    @staticmethod
    def _rss_mb() -> float:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def _poll(self):
        while not self._stop.wait(self.interval):
            self._max = max(self._max, self._rss_mb())

    def __enter__(self):
        self._start = self._max = self._rss_mb()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._max = max(self._max, self._rss_mb())
        self.peak_mb = self._max - self._start


@dataclasses.dataclass
class PseudoLabels:
    """Result of one pseudo-labelling step."""

    labels: np.ndarray  #: (N,) int64, 0..num_clusters-1, -1 = outlier (dropped from training)
    eps: float  #: the DBSCAN eps used
    stats: dict  #: what a hook logs (see the module docstring)

    @property
    def num_clusters(self) -> int:
        return int(self.stats["num_clusters"])

    @property
    def num_outliers(self) -> int:
        return int(self.stats["num_outliers"])


def generate_pseudo_labels(features, *, eps: float | None = None, rho: float = DEFAULT_RHO, k1: int = 30,
                           k2: int = 6, min_samples: int = 4, true_labels=None,
                           use_gpu: bool | None = None) -> PseudoLabels:
    """Jaccard distance + DBSCAN pseudo-labels of ``features`` (N, D; L2-normalise them first, as MMT).

    ``eps`` None -> :func:`select_eps` with ``rho``. ``true_labels`` (optional, only when the target's
    labels happen to be readable) add NMI / ARI to the statistics and nothing else. Pure and
    deterministic; raises :class:`NoClustersError` when DBSCAN finds no cluster.
    """
    timings: dict = {}
    with _PeakRSS() as mem:
        t0 = time.perf_counter()
        dist = jaccard_distance(features, k1=k1, k2=k2, use_gpu=use_gpu, timings=timings)
        t1 = time.perf_counter()
        eps_source = "fixed"
        if eps is None:
            eps, eps_source = select_eps(dist, rho), f"rho={rho:g}"
        t2 = time.perf_counter()
        labels = dbscan_labels(dist, eps, min_samples)
        t3 = time.perf_counter()
    n = len(labels)
    sizes = np.bincount(labels[labels >= 0])
    stats = {"num_samples": n, "num_clusters": len(sizes), "num_outliers": int((labels < 0).sum()),
             "outlier_fraction": float((labels < 0).mean()), "eps": float(eps), "eps_source": eps_source,
             "cluster_size_min": int(sizes.min()), "cluster_size_median": float(np.median(sizes)),
             "cluster_size_max": int(sizes.max()), "pairs_per_point": dist.nnz / n,
             "time_s": t3 - t0, "knn_s": timings["knn"], "encode_s": timings["encode"],
             "jaccard_s": timings["jaccard"], "eps_s": t2 - t1, "dbscan_s": t3 - t2,
             "rss_peak_mb": mem.peak_mb}
    if true_labels is not None:
        stats.update(label_quality(labels, true_labels))
    return PseudoLabels(labels=labels, eps=float(eps), stats=stats)


class DBSCANPseudoLabeler:
    """The per-epoch pseudo-labelling component a trainer hook calls: ``labeler(features)``.

    ``eps`` fixed, or None: chosen by :func:`select_eps` (``rho``) at the first call and kept for
    the later ones (MMT). Each call logs one line (clusters, outliers, eps, time, memory, and NMI /
    ARI when ``true_labels`` are given) and returns :class:`PseudoLabels`.
    """

    def __init__(self, eps: float | None = None, rho: float = DEFAULT_RHO, k1: int = 30, k2: int = 6,
                 min_samples: int = 4, use_gpu: bool | None = None):
        self.eps, self.rho, self.k1, self.k2 = eps, rho, k1, k2
        self.min_samples, self.use_gpu = min_samples, use_gpu
        self.eps_source = "fixed" if eps is not None else None

    def __call__(self, features, true_labels=None) -> PseudoLabels:
        result = generate_pseudo_labels(features, eps=self.eps, rho=self.rho, k1=self.k1, k2=self.k2,
                                        min_samples=self.min_samples, true_labels=true_labels,
                                        use_gpu=self.use_gpu)
        if self.eps is None:
            self.eps, self.eps_source = result.eps, result.stats["eps_source"] + " (first call)"
        result.stats["eps_source"] = self.eps_source
        logger.info(format_stats(result.stats))
        return result


def format_stats(stats: dict) -> str:
    """One log line from :attr:`PseudoLabels.stats`."""
    s = (f"pseudo-labels: {stats['num_clusters']} clusters, {stats['num_outliers']} outliers "
         f"({100 * stats['outlier_fraction']:.1f}%) of {stats['num_samples']} at eps={stats['eps']:.4f} "
         f"({stats['eps_source']}); {stats['time_s']:.1f}s (knn {stats['knn_s']:.1f}s), "
         f"+{stats['rss_peak_mb']:.0f} MB peak RSS")
    if "nmi" in stats:
        s += f"; NMI {stats['nmi']:.3f}, ARI {stats['ari']:.3f} vs true labels (logging only)"
    return s
