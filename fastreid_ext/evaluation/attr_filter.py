"""APR attribute acceleration: attribute-filtered retrieval (Lin et al., "Improving person
re-identification by attribute and identity learning", Sec. "Attribute acceleration").

Method. Attributes are predicted offline for the gallery. At query time a gallery image is dropped
when one of its CONFIDENT predictions (top class probability >= ``threshold``; 0.7 in the paper)
differs from the query's confident prediction of the same attribute. An attribute on which either
side is not confident never excludes. The remaining gallery is ranked by feature distance.

Metrics (:func:`evaluate_filtered`, :func:`eval_market1501_filtered`). The filtered retrieval
returns only the kept gallery images, so a gallery image the filter dropped is NEVER a hit, at any
rank: the evaluation takes the kept mask explicitly (``SearchResult.kept``) and never relies on
where a ranker puts the excluded entries. (It used to rank the distance matrix, excluded pairs set
to ``+inf``, with FastReID's ranker; a query keeping fewer than k images then had dropped images in
its top k, in index order, and a dropped true match there counted as a hit.) Conventions, with
FastReID's market1501 protocol otherwise (``fastreid/evaluation/rank.py``: gallery images of the
query's identity AND camera are junk and removed; a query whose identity has no other image in the
gallery is skipped; CMC averaged over the remaining queries):

* a dropped true match is MISSED: it ranks after every kept image and adds nothing to the CMC;
* AP = sum over the KEPT true matches of the precision at their rank among the kept images,
  divided by the number of ALL true matches (kept or dropped): a dropped match contributes 0 (its
  precision at rank "never retrieved" is 0);
* INP (``|true matches| / rank of the hardest one``, FastReID's mINP) is 0 for a query with a
  dropped true match: its hardest match is never retrieved;
* the queries are those of the unfiltered evaluation (validity is decided on the whole gallery),
  so the filtered and full numbers average over the same queries.

With nothing dropped these are FastReID's numbers (tested against its Cython ranker and compat's
Python ranker; distances are sorted as FastReID's Cython ranker sorts them, ``np.argsort`` of the
float32 rows, so even tied distances are ordered alike). In top-k mode only kept images are
returned (rows padded with index -1 / distance +inf when fewer than k are kept).

Where the work is saved (it is real, not just counted):

1. Signatures. Each image's confident predictions form a signature (per head: class or -1 =
   unknown, :func:`confident_classes`); whether a query keeps a gallery image depends only on the
   two signatures (``num_groups`` = distinct query signatures).
2. Offline, the gallery is sorted by signature (heads ordered most selective first), so that the
   images sharing a signature prefix form one contiguous block of rows; it is stored with its
   penalty columns (point 4).
3. Search plan: a tree over the heads, in that order. A node is a block of sorted gallery rows
   (same prefix) plus the queries compatible with that prefix (a vectorised boolean test per
   head and class). Splitting it on the next head gives one child block per gallery value; the
   child with a confident class c keeps only the queries predicting c or unknown, the "unknown"
   child keeps them all. Each leaf is ONE search: its queries against its contiguous rows (faiss
   ``knn`` for top-k, one BLAS product for the distance matrix), so no gallery row is ever copied
   and no (Q, G) mask is ever built. The planner splits while that lowers the modelled cost
   ``n_q * gather_cost + n_q * n_g * (1 + small_block_cost * exp(-min(n_q, n_g) / 32)) +
   leaf_cost`` (units: one BLAS query-gallery distance; defaults measured on a 2-core x86 CPU with
   2048-d features: gathering a query row ~ 32 distances, products with fewer than ~32 rows on a
   side are up to ~4x less efficient per pair, ~2000 distances of fixed overhead per call).

   * ``plan="auto"`` (default): a leaf's queries may disagree with some of its gallery rows on
     heads below the split; the leaf then computes a superset of its kept pairs, because many small
     searches cost more than a few more pairs in one efficient product. (Grouping the QUERIES by
     signature and gathering each group's kept gallery rows was measured slower than the full
     search itself on this problem: ~2,000 groups of 1-2 queries, each re-reading ~1,000 8-KB rows.)
   * ``plan="exact"``: split down to full gallery signatures; every leaf's pairs are all kept, so
     distances computed == pairs kept (many tiny searches: slower than "auto" on a CPU).

4. The heads a leaf did not split are enforced inside the same product by penalty columns
   appended to the vectors (query: 1 at each class of a confident head except its own; gallery:
   ``-big`` at its confident class), so a pair disagreeing on n confident heads scores
   ``similarity - n * big`` and is reported as excluded. The result is therefore EXACTLY the
   filter's in both plans. ``computed_fraction`` = distances actually computed / (Q * G);
   ``gallery_fraction`` = the filter's kept fraction (the paper's gallery reduction is its inverse).

Timing (``SearchResult.time_s``, the speed-up ``full / filtered``): both searches time the same
work, the QUERY side only. Preparing the gallery (normalising its features and copying them into
the search structure: :meth:`FullSearch.fit`, :meth:`FilteredSearch.fit`, where the filter also
sorts the gallery and adds its penalty columns) is the offline part of APR and is timed on
neither side (``index_time_s``); normalising the queries (and, for the filter, their signatures,
penalty columns and search plan) is timed on both. :func:`full_search` fits and searches in one
call but reports only the search. (The full search used to time its gallery normalisation too,
which inflated the filter's speed-up.)

Backends: on CPU, faiss ``knn`` for top-k and one BLAS product (``np.matmul``) for a full distance
matrix (faiss's own ``pairwise_distances`` runs the same sgemm and was measured slower: 0.70 s vs
0.47 s for 3,000 x 8,000 x 2048-d on 2 cores); on a GPU, faiss ``knn_gpu`` / ``pairwise_distance_gpu`` when
``faiss.get_num_gpus() > 0`` (``use_gpu=None``). On a GPU each leaf copies its block to the device
(untested here: no GPU was available), so the filter only pays off there for large leaves (raise
``leaf_cost``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

__all__ = ["UNKNOWN", "confident_classes", "compatible_mask", "SearchResult", "FilteredSearch", "FullSearch",
           "full_search", "eval_market1501_filtered", "evaluate_filtered"]

UNKNOWN = -1  #: head value of a signature where the prediction is not confident
METRICS = ("cosine", "euclidean")


# ------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------
def _as_numpy(x, dtype=np.float32) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor (any device)
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x), dtype=dtype)


def _features(x, metric: str, name: str) -> np.ndarray:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    x = _as_numpy(x)
    if x.ndim != 2:
        raise ValueError(f"{name} features must be 2-D (N, D), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} features contain NaN or inf")
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


def confident_classes(probs_list, threshold: float = 0.7) -> np.ndarray:
    """Signatures: ``(N, H)`` int64, the predicted class of each head where its probability is
    ``>= threshold``, else ``UNKNOWN`` (-1).

    ``probs_list``: one ``(N, K_h)`` array (numpy or torch) of class probabilities per attribute
    head. ``threshold <= 0`` makes every prediction confident, ``threshold > 1`` none. A binary head
    always has a top probability >= 0.5, so thresholds <= 0.5 make all binary heads confident.
    """
    if len(probs_list) == 0:
        raise ValueError("probs_list is empty: need one (N, K) probability array per attribute head")
    cols, n = [], None
    for h, p in enumerate(probs_list):
        p = _as_numpy(p)
        if p.ndim != 2 or p.shape[1] < 1:
            raise ValueError(f"attribute head {h}: probabilities must be (N, K), got shape {p.shape}")
        if n is None:
            n = p.shape[0]
        elif p.shape[0] != n:
            raise ValueError(f"attribute head {h} has {p.shape[0]} rows, head 0 has {n}")
        top = p.max(1) if p.shape[0] else np.zeros(0, np.float32)
        cls = p.argmax(1) if p.shape[0] else np.zeros(0, np.int64)
        cols.append(np.where(top >= threshold, cls, UNKNOWN))  # NaN rows compare False: unknown
    return np.stack(cols, 1).astype(np.int64)


def compatible_mask(q_conf, g_conf) -> np.ndarray:
    """Reference filter: ``(Q, G)`` bool, True where no head has two confident, different
    predictions (``UNKNOWN`` on either side never excludes). Memory Q*G; use for tests / small sets."""
    q_conf, g_conf = np.asarray(q_conf), np.asarray(g_conf)
    if q_conf.ndim != 2 or g_conf.ndim != 2 or q_conf.shape[1] != g_conf.shape[1]:
        raise ValueError(f"signatures must be (Q, H) and (G, H), got {q_conf.shape} and {g_conf.shape}")
    ok = np.ones((q_conf.shape[0], g_conf.shape[0]), bool)
    for h in range(q_conf.shape[1]):
        q, g = q_conf[:, h, None], g_conf[None, :, h]
        ok &= (q < 0) | (g < 0) | (q == g)
    return ok


# ------------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------------
@dataclass
class SearchResult:
    """Output of :meth:`FilteredSearch.search` / :func:`full_search`.

    ``distmat``: ``(Q, G)`` float32 distances (cosine: ``1 - cos``; euclidean: squared L2, as in
    FastReID), ``excluded_value`` (+inf) where the filter dropped the gallery image; set when
    ``topk`` is None. ``topk_idx`` / ``topk_dist``: ``(Q, k)`` nearest KEPT gallery indices and
    distances, ascending, padded with -1 / +inf; set when ``topk`` is given.
    ``gallery_fraction``: mean fraction of the gallery each query keeps (the paper's reduction is
    ``1 / gallery_fraction``). ``computed_fraction``: query-gallery distances actually computed
    / (Q * G). ``num_groups``: distinct query signatures; ``num_blocks``: searches run (plan leaves).
    ``time_s``: query-time wall clock: preparing the queries and searching, not preparing the
    gallery (offline, ``fit``; see the module docstring, "Timing"). ``kept``: ``(Q, G)`` bool, the
    filter's kept pairs in gallery order (distance-matrix mode of :class:`FilteredSearch`; None
    means every pair is kept); computed after the timing, for the evaluation.
    """

    distmat: np.ndarray | None = None
    topk_idx: np.ndarray | None = None
    topk_dist: np.ndarray | None = None
    gallery_fraction: float = 1.0
    computed_fraction: float = 1.0
    num_groups: int = 1
    num_blocks: int = 1
    time_s: float = 0.0
    kept_per_query: np.ndarray | None = field(default=None, repr=False)
    kept: np.ndarray | None = field(default=None, repr=False)

    @property
    def reduction(self) -> float:
        """How many times fewer gallery images a query is compared with (kept-set reduction)."""
        return 1.0 / max(self.gallery_fraction, 1e-12)


# ------------------------------------------------------------------------------------------------
# Backends (CPU faiss + BLAS, or faiss GPU)
# ------------------------------------------------------------------------------------------------
_GPU_RES = None


def _gpu_resources():
    global _GPU_RES
    if _GPU_RES is None:
        import faiss

        _GPU_RES = faiss.StandardGpuResources()
    return _GPU_RES


def _resolve_gpu(use_gpu) -> bool:
    import faiss

    have = faiss.get_num_gpus() > 0
    if use_gpu is None:
        return have
    if use_gpu and not have:
        raise RuntimeError("use_gpu=True but faiss sees no GPU (faiss.get_num_gpus() == 0)")
    return bool(use_gpu)


def _knn_ip(xq, xb, k, gpu):
    """Top-k largest inner products (faiss)."""
    import faiss

    if gpu:
        return faiss.knn_gpu(_gpu_resources(), xq, xb, k, metric=faiss.METRIC_INNER_PRODUCT)
    return faiss.knn(xq, xb, k, metric=faiss.METRIC_INNER_PRODUCT)


def _all_ip(xq, xb, gpu, out=None):
    """All inner products ``xq @ xb.T`` (BLAS on CPU, faiss on GPU)."""
    if gpu:
        import faiss

        return faiss.pairwise_distance_gpu(_gpu_resources(), xq, xb, D=out, metric=faiss.METRIC_INNER_PRODUCT)
    return np.matmul(xq, xb.T, out=out)


# ------------------------------------------------------------------------------------------------
# Full (unfiltered) search: the baseline
# ------------------------------------------------------------------------------------------------
class FullSearch:
    """Unfiltered exhaustive search with the same backend as :class:`FilteredSearch` (faiss ``knn``
    for top-k, one BLAS product for the distance matrix): the baseline of the speed-up.

    ``fit(g_feat)`` prepares the gallery (normalised features; euclidean: with their squared norms
    as an extra column), timed in ``index_time_s``; ``search(q_feat, topk)`` times only the query
    side (``SearchResult.time_s``), like :meth:`FilteredSearch.search`.
    """

    def __init__(self, metric: str = "cosine", use_gpu=None):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        self.metric, self.use_gpu = metric, use_gpu
        self._xb = None
        self.index_time_s = 0.0

    def fit(self, g_feat) -> "FullSearch":
        """Prepare the gallery (offline; not part of ``search``'s ``time_s``)."""
        t0 = time.perf_counter()
        xb = _features(g_feat, self.metric, "gallery")
        if self.metric == "euclidean":  # rank by |g|^2 - 2 q.g  ==  max over q.g - |g|^2 / 2
            xb = np.ascontiguousarray(np.hstack([xb, (xb * xb).sum(1, keepdims=True)]))
        self._xb = xb
        self.index_time_s = time.perf_counter() - t0
        return self

    def search(self, q_feat, topk: int | None = None) -> SearchResult:
        """Distance matrix (``topk`` None) or the ``topk`` nearest gallery images of each query."""
        if self._xb is None:
            raise RuntimeError("no gallery: call fit(g_feat) first")
        if topk is not None and int(topk) < 1:
            raise ValueError(f"topk must be >= 1 or None, got {topk}")
        gpu = _resolve_gpu(self.use_gpu)
        xb = self._xb
        d = xb.shape[1] - (self.metric == "euclidean")
        t0 = time.perf_counter()
        xq = _features(q_feat, self.metric, "query")
        if xq.shape[1] != d:
            raise ValueError(f"query dim {xq.shape[1]} != gallery dim {d}")
        nq, ng = len(xq), len(xb)
        res = SearchResult(num_groups=1, num_blocks=1, kept_per_query=np.full(nq, ng, np.int64))
        if self.metric == "euclidean":
            qn2 = (xq * xq).sum(1)
            xq = np.ascontiguousarray(np.hstack([xq, np.full((nq, 1), -0.5, np.float32)]))
        if topk is None:
            dist = _all_ip(xq, xb, gpu, out=np.empty((nq, ng), np.float32))
            if self.metric == "cosine":
                np.subtract(1.0, dist, out=dist)
            else:
                dist *= -2.0
                dist += qn2[:, None]
            res.distmat = dist
        elif nq and ng:
            k = min(int(topk), ng)
            sim, idx = _knn_ip(xq, xb, k, gpu)
            dist = 1.0 - sim if self.metric == "cosine" else qn2[:, None] - 2.0 * sim
            res.topk_idx, res.topk_dist = _pad(idx.astype(np.int64), dist.astype(np.float32), int(topk))
        else:
            res.topk_idx, res.topk_dist = _pad(np.zeros((nq, 0), np.int64), np.zeros((nq, 0), np.float32), int(topk))
        res.time_s = time.perf_counter() - t0
        return res


def full_search(q_feat, g_feat, metric: str = "cosine", topk: int | None = None, use_gpu=None) -> SearchResult:
    """Unfiltered exhaustive search in one call (:class:`FullSearch` ``.fit(g_feat).search(q_feat)``).
    ``time_s`` is the query-side time only, as for :meth:`FilteredSearch.search` on a fitted gallery
    (the gallery preparation is in the searcher's ``index_time_s``, not reported here)."""
    return FullSearch(metric, use_gpu).fit(g_feat).search(q_feat, topk)


def _pad(idx, dist, k):
    if idx.shape[1] < k:
        pad = k - idx.shape[1]
        idx = np.hstack([idx, np.full((len(idx), pad), -1, np.int64)])
        dist = np.hstack([dist, np.full((len(dist), pad), np.inf, np.float32)])
    return idx, dist


# ------------------------------------------------------------------------------------------------
# Filtered search
# ------------------------------------------------------------------------------------------------
def _check_plan(plan: str) -> str:
    if plan not in ("auto", "exact"):
        raise ValueError(f"plan must be 'auto' or 'exact', got {plan!r}")
    return plan


class FilteredSearch:
    """APR attribute-filtered retrieval (see the module docstring).

    >>> fs = FilteredSearch(threshold=0.7)
    >>> res = fs.search(q_feat, g_feat, q_probs, g_probs)          # (Q, G) distmat, +inf = excluded
    >>> res.kept                                                     # (Q, G) bool: the kept pairs
    >>> res = fs.search(q_feat, g_feat, q_probs, g_probs, topk=100) # nearest kept images only

    ``fit(g_feat, g_probs)`` prepares the gallery once (the offline part: normalised features with
    penalty columns, signatures, sorted into signature blocks; timed in ``index_time_s``, not in
    the search's ``time_s``); ``search(q_feat, None, q_probs, None)`` then reuses it. ``plan``:
    "auto" (cost model) or "exact" (every block is one gallery signature: distances computed ==
    kept pairs). ``gather_cost``, ``small_block_cost`` and ``leaf_cost`` override the auto cost
    model. ``excluded_value``: distance of excluded pairs in the distance matrix (+inf); evaluate
    with the kept mask (``res.kept``, :func:`evaluate_filtered`), not with this value's rank.
    """

    def __init__(self, threshold: float = 0.7, metric: str = "cosine", use_gpu=None, plan: str = "auto",
                 gather_cost: float = 32.0, small_block_cost: float = 3.0, leaf_cost: float = 2000.0,
                 excluded_value: float = float("inf")):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        self.threshold, self.metric, self.plan = float(threshold), metric, _check_plan(plan)
        self.use_gpu = use_gpu
        self.gather_cost, self.small_block_cost = float(gather_cost), float(small_block_cost)
        self.leaf_cost = float(leaf_cost)
        self.excluded_value = float(excluded_value)
        self._gallery = None
        self.index_time_s = 0.0

    # -------------------------------------------------------------------------------- offline
    def fit(self, g_feat, g_probs) -> "FilteredSearch":
        """Prepare the gallery (the offline part of APR)."""
        t0 = time.perf_counter()
        xb = _features(g_feat, self.metric, "gallery")
        conf = confident_classes(g_probs, self.threshold)
        if len(conf) != len(xb):
            raise ValueError(f"gallery has {len(xb)} features but {len(conf)} attribute predictions")
        ncls = [int(_as_numpy(p).shape[1]) for p in g_probs]
        ng, d = xb.shape
        # head order: most selective first (gallery pairs that the head separates)
        power = [float((n * (n.sum() - n)).sum()) for n in
                 (np.bincount(conf[:, h][conf[:, h] >= 0], minlength=k).astype(np.float64)
                  for h, k in enumerate(ncls))]
        order = np.argsort(-np.asarray(power), kind="stable")
        perm = np.lexsort([conf[:, h] for h in order[::-1]]) if ng else np.zeros(0, np.int64)
        conf = conf[perm]
        offsets = np.concatenate([[0], np.cumsum(ncls)]).astype(np.int64)
        col = 1 if self.metric == "euclidean" else 0  # euclidean: |g|^2 column (queries: -1/2)
        width = d + int(-(-(col + offsets[-1]) // 8) * 8)  # penalty columns padded to 8
        aug = np.zeros((ng, width), np.float32)
        aug[:, :d] = xb[perm]
        if col:
            aug[:, d] = (aug[:, :d] ** 2).sum(1)
        rows = np.arange(ng)
        for h in range(conf.shape[1]):
            sel = conf[:, h] >= 0
            aug[rows[sel], d + col + offsets[h] + conf[sel, h]] = -1.0  # times `big` (_scale_penalty)
        self._gallery = dict(aug=aug, perm=perm, conf=conf, order=order, d=d, col=col, offsets=offsets,
                             ncls=ncls, ng=ng, big=1.0,
                             gmax=float(np.sqrt((xb * xb).sum(1).max())) if ng else 0.0)
        if self.metric == "cosine":
            self._scale_penalty(4.0)  # |cos| <= 1: see _query_block
        self.index_time_s = time.perf_counter() - t0
        return self

    def _scale_penalty(self, big):
        g = self._gallery
        if g["big"] != big:
            lo = g["d"] + g["col"]
            block = g["aug"][:, lo:lo + g["offsets"][-1]]
            block *= big / g["big"]
            g["big"] = big

    # -------------------------------------------------------------------------------- online
    def search(self, q_feat, g_feat, q_probs, g_probs, topk: int | None = None,
               plan: str | None = None) -> SearchResult:
        """Filtered search of the queries. ``g_feat`` / ``g_probs``: the gallery, or None to reuse
        the one given to :meth:`fit` (preparing the gallery is not part of ``time_s``). ``plan``:
        this call's plan instead of the instance's (the prepared gallery serves every plan)."""
        plan = self.plan if plan is None else _check_plan(plan)
        if g_feat is not None or g_probs is not None:
            if g_feat is None or g_probs is None:
                raise ValueError("give both g_feat and g_probs, or neither (to reuse fit())")
            self.fit(g_feat, g_probs)
        if self._gallery is None:
            raise RuntimeError("no gallery: call fit(g_feat, g_probs) or pass them to search()")
        if topk is not None and int(topk) < 1:
            raise ValueError(f"topk must be >= 1 or None, got {topk}")
        g = self._gallery
        gpu = _resolve_gpu(self.use_gpu)
        t0 = time.perf_counter()
        xq = _features(q_feat, self.metric, "query")
        if xq.shape[1] != g["d"]:
            raise ValueError(f"query dim {xq.shape[1]} != gallery dim {g['d']}")
        sig = confident_classes(q_probs, self.threshold)
        if len(sig) != len(xq):
            raise ValueError(f"{len(xq)} query features but {len(sig)} attribute predictions")
        qcls = [int(_as_numpy(p).shape[1]) for p in q_probs]
        if qcls != g["ncls"]:
            raise ValueError(f"query attribute heads have {qcls} classes, the gallery's {g['ncls']}")
        nq, ng, perm, aug = len(xq), g["ng"], g["perm"], g["aug"]
        xq_aug, qn2, cut = self._query_block(xq, sig)
        leaves = self._plan(sig, plan)

        if topk is None:
            out = np.full((nq, ng), self.excluded_value, np.float32)
        else:
            k = int(topk)
            cnt = np.zeros(nq, np.int64)  # candidates per query: top-min(k, block) of each block
            for a, b, qi in leaves:
                cnt[qi] += min(k, b - a)
            start = np.concatenate([[0], np.cumsum(cnt)])
            cand_d = np.full(int(start[-1]), np.inf, np.float32)
            cand_i = np.full(int(start[-1]), -1, np.int64)
            cursor = start[:-1].copy()
        computed = 0
        for a, b, qi in leaves:
            computed += len(qi) * (b - a)
            xqb = xq_aug if len(qi) == nq else xq_aug[qi]
            q2 = None if qn2 is None else qn2[qi]
            if topk is None:
                sim = _all_ip(xqb, aug[a:b], gpu)
                dist = self._to_dist(sim, q2)
                dist[sim < cut] = self.excluded_value
                out[np.ix_(qi, perm[a:b])] = dist
            else:
                kk = min(k, b - a)
                if kk == b - a:  # the block is no larger than k: keep all of it, no selection
                    sim = _all_ip(xqb, aug[a:b], gpu)
                    idx = np.broadcast_to(np.arange(kk), sim.shape)
                else:
                    sim, idx = _knn_ip(xqb, aug[a:b], kk, gpu)
                bad = (sim < cut) | (idx < 0)
                pos = cursor[qi][:, None] + np.arange(kk)
                cand_d[pos] = np.where(bad, np.inf, self._to_dist(sim, q2))
                cand_i[pos] = np.where(bad, -1, perm[a + np.maximum(idx, 0)])
                cursor[qi] += kk
        res = SearchResult(num_blocks=len(leaves))
        if topk is None:
            res.distmat = out
        else:
            res.topk_idx, res.topk_dist = self._merge(cand_d, cand_i, start, nq, k)
        res.time_s = time.perf_counter() - t0

        # statistics (not timed): the filter's kept pairs per query, from signature counts
        denom = max(nq * ng, 1)
        res.computed_fraction = computed / denom
        res.kept_per_query = self._kept_counts(sig)
        res.gallery_fraction = float(res.kept_per_query.sum() / denom) if nq and ng else 0.0
        res.num_groups = len(np.unique(sig, axis=0)) if nq else 0
        if topk is None:
            res.kept = self._kept_mask_of(sig)
        return res

    def kept_mask(self, q_probs) -> np.ndarray:
        """``(Q, G)`` bool: the gallery images (fitted gallery, original order) each query keeps."""
        if self._gallery is None:
            raise RuntimeError("no gallery: call fit(g_feat, g_probs) first")
        return self._kept_mask_of(confident_classes(q_probs, self.threshold))

    # -------------------------------------------------------------------------------- helpers
    def _query_block(self, xq, sig):
        """Queries with penalty columns (1 at every class of a confident head but its own), their
        squared norms (euclidean) and the score below which a pair is excluded.

        Kept pairs score within [-span, span] (cosine: span = 1; euclidean: |q.g - |g|^2/2| <=
        span); a conflicting head subtracts big >= 4 span + 1, so excluded pairs score <= -3 span
        - 1 and the cut is -2 span - 0.5."""
        g = self._gallery
        nq, d = xq.shape
        aug = np.zeros((nq, g["aug"].shape[1]), np.float32)
        aug[:, :d] = xq
        qn2, span = None, 1.0
        if self.metric == "euclidean":
            qn2 = (xq * xq).sum(1)
            aug[:, d] = -0.5
            qmax = float(np.sqrt(qn2.max())) if nq else 0.0
            span = max(qmax * g["gmax"] + 0.5 * g["gmax"] ** 2, 1e-6)
            self._scale_penalty(float(2.0 ** np.ceil(np.log2(4 * span + 1))))
        lo = d + g["col"]
        for h, k in enumerate(g["ncls"]):
            sel = np.flatnonzero(sig[:, h] >= 0)
            if len(sel):
                block = np.ones((len(sel), k), np.float32)
                block[np.arange(len(sel)), sig[sel, h]] = 0.0
                aug[sel[:, None], lo + g["offsets"][h] + np.arange(k)] = block
        return aug, qn2, -2.0 * span - 0.5

    def _to_dist(self, sim, qn2):
        if self.metric == "cosine":
            return (1.0 - sim).astype(np.float32, copy=False)
        return (qn2[:, None] - 2.0 * sim).astype(np.float32, copy=False)

    def _cost(self, nq, ng):
        """Modelled cost of one block search, in units of one BLAS query-gallery distance."""
        small = 1.0 + self.small_block_cost * np.exp(-min(nq, ng) / 32.0)
        return nq * self.gather_cost + nq * ng * small + self.leaf_cost

    def _plan(self, sig, plan):
        """Blocks ``(a, b, query ids)``: sorted-gallery rows ``a:b`` and the queries compatible
        with them on the heads split so far (a tree over the heads in gallery order)."""
        g = self._gallery
        conf, order, nq, ng = g["conf"], g["order"], len(sig), g["ng"]
        if nq == 0 or ng == 0:
            return []
        exact = plan == "exact"
        compat = [[(sig[:, h] == c) | (sig[:, h] < 0) for c in range(k)] for h, k in enumerate(g["ncls"])]
        leaves, stack = [], [(0, ng, 0, None, nq)]
        while stack:
            a, b, dep, mask, n_q = stack.pop()
            if dep == len(order):
                leaves.append((a, b, mask))
                continue
            h = order[dep]
            col = conf[a:b, h]  # sorted inside the node: one run per value
            cut = np.flatnonzero(np.diff(col)) + 1
            bounds = np.concatenate([[0], cut, [b - a]])
            children, total = [], 0.0
            for i in range(len(bounds) - 1):
                v = col[bounds[i]]
                if v < 0:
                    m, n_c = mask, n_q
                else:
                    m = compat[h][v] if mask is None else mask & compat[h][v]
                    n_c = int(m.sum())
                if n_c:
                    children.append((a + bounds[i], a + bounds[i + 1], dep + 1, m, n_c))
                    total += self._cost(n_c, bounds[i + 1] - bounds[i])
            if exact or total < self._cost(n_q, b - a):
                stack.extend(children)
            else:
                leaves.append((a, b, mask))
        return [(int(a), int(b), np.arange(nq) if m is None else np.flatnonzero(m)) for a, b, m in leaves]

    @staticmethod
    def _merge(cand_d, cand_i, start, nq, k):
        """Per query, the k smallest candidate distances (ascending), padded with -1 / +inf."""
        out_i = np.full((nq, k), -1, np.int64)
        out_d = np.full((nq, k), np.inf, np.float32)
        for q in range(nq):
            seg = cand_d[start[q]:start[q + 1]]
            if len(seg) > k:
                sel = np.argpartition(seg, k - 1)[:k]
                sel = sel[np.argsort(seg[sel], kind="stable")]
            else:
                sel = np.argsort(seg, kind="stable")
            out_d[q, :len(sel)] = seg[sel]
            out_i[q, :len(sel)] = cand_i[start[q]:start[q + 1]][sel]
        out_i[~np.isfinite(out_d)] = -1
        return out_i, out_d

    def _kept_mask_of(self, sig):
        """The exact filter as a (Q, G) mask in gallery order, via distinct signatures."""
        g = self._gallery
        nq, ng = len(sig), g["ng"]
        if nq == 0 or ng == 0:
            return np.zeros((nq, ng), bool)
        conf = np.empty_like(g["conf"])
        conf[g["perm"]] = g["conf"]  # back to the gallery's own order
        gsig, ginv = np.unique(conf, axis=0, return_inverse=True)
        qsig, qinv = np.unique(sig, axis=0, return_inverse=True)
        ok = compatible_mask(qsig, gsig)
        return ok[qinv.reshape(-1)][:, ginv.reshape(-1)]

    def _kept_counts(self, sig):
        """Kept gallery images per query (exact filter), via distinct gallery signatures."""
        g = self._gallery
        if len(sig) == 0 or g["ng"] == 0:
            return np.zeros(len(sig), np.int64)
        gsig, gcount = np.unique(g["conf"], axis=0, return_counts=True)
        qsig, inv = np.unique(sig, axis=0, return_inverse=True)
        kept = np.zeros(len(qsig), np.int64)
        for lo in range(0, len(qsig), 256):  # (256, distinct gallery signatures) at a time
            ok = compatible_mask(qsig[lo:lo + 256], gsig)
            kept[lo:lo + 256] = ok.astype(np.int64) @ gcount
        return kept[inv.reshape(-1)]


# ------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------
def eval_market1501_filtered(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50, kept=None,
                             chunk: int = 256):
    """FastReID's market1501 evaluation of a FILTERED retrieval: ``(cmc[max_rank], all_AP, all_INP)``
    like ``fastreid.evaluation.rank.evaluate_rank``.

    ``kept``: ``(Q, G)`` bool, the gallery images each query's retrieval returns (None: all).
    Only kept images take a rank (by ``distmat``, sorted as FastReID's ranker sorts: ``np.argsort``
    of float32 rows); where the others fall in that sort, and so their distances, do not matter.
    Junk (same identity and camera as the query) is removed and a query whose identity is absent
    from the rest of the gallery is skipped, as in FastReID; a dropped true match is missed (no CMC
    hit at any rank), counts in AP's denominator and makes the query's INP 0 (see the module
    docstring). The CMC of a query that keeps fewer than ``max_rank`` images stays at its last
    value (FastReID's Cython ranker leaves garbage there, compat's Python ranker pads likewise).
    Queries are processed ``chunk`` at a time (memory ``chunk x G``).
    """
    distmat = np.asarray(distmat)
    nq, ng = distmat.shape
    q_pids, g_pids = np.asarray(q_pids).reshape(-1), np.asarray(g_pids).reshape(-1)
    q_camids, g_camids = np.asarray(q_camids).reshape(-1), np.asarray(g_camids).reshape(-1)
    if kept is not None:
        kept = np.asarray(kept, bool)
        if kept.shape != distmat.shape:
            raise ValueError(f"kept mask of shape {kept.shape} for a distance matrix of shape {distmat.shape}")
    all_cmc, all_AP, all_INP = [], [], []
    for lo in range(0, nq, chunk):
        hi = min(lo + chunk, nq)
        same_id = g_pids[None, :] == q_pids[lo:hi, None]
        junk = same_id & (g_camids[None, :] == q_camids[lo:hi, None])
        match = same_id & ~junk
        n_rel = match.sum(1)
        valid = n_rel > 0
        if not valid.any():
            continue
        sel = ~junk if kept is None else kept[lo:hi] & ~junk
        d, sel, match, n_rel = distmat[lo:hi][valid], sel[valid], match[valid], n_rel[valid]
        # the ranker's sort (FastReID's: np.argsort of float32 rows); the RANK of an image is the
        # number of selected (kept, not junk) images up to it, so wherever the sort puts the
        # others (whatever their distances), they neither take a rank nor count as hits
        order = np.argsort(d.astype(np.float32, copy=False), axis=1)
        kept_rank = np.take_along_axis(sel, order, 1).cumsum(1)
        raw = np.take_along_axis(match & sel, order, 1)  # kept true matches along the order
        hits = raw.cumsum(1)
        found = hits[:, -1]
        first = np.where(found > 0, kept_rank[np.arange(len(raw)), np.argmax(raw, 1)], np.iinfo(np.int64).max)
        all_cmc.append((first[:, None] <= np.arange(1, max_rank + 1)[None, :]).astype(np.float32))
        prec = np.where(raw, hits / np.maximum(kept_rank, 1), 0.0)
        all_AP.extend((prec.sum(1) / n_rel).tolist())
        last = kept_rank[np.arange(len(raw)), raw.shape[1] - 1 - np.argmax(raw[:, ::-1], 1)]
        all_INP.extend(np.where(found == n_rel, n_rel / np.maximum(last, 1), 0.0).tolist())
    if not all_cmc:
        raise ValueError("evaluation: no query identity appears in the gallery (from another camera)")
    return np.concatenate(all_cmc).mean(0), all_AP, all_INP


def evaluate_filtered(dist_full, dist_filtered, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50,
                      kept=None) -> dict:
    """Rank-1 / Rank-5 / mAP / mINP (percent) of the full and of the filtered retrieval, plus the
    differences (full - filtered), both with :func:`eval_market1501_filtered` (FastReID's
    market1501 protocol; the full retrieval keeps everything, so its numbers are FastReID's).

    ``kept``: ``(Q, G)`` bool, the pairs the filter kept (``SearchResult.kept``). None: the finite
    entries of ``dist_filtered`` (:class:`FilteredSearch`'s default ``excluded_value`` is +inf);
    pass ``kept`` explicitly for any other ``excluded_value``. A dropped image is never a hit."""
    if kept is None:
        kept = np.isfinite(np.asarray(dist_filtered))
    out = {}
    for name, dist, mask in (("full", dist_full, None), ("filtered", dist_filtered, kept)):
        cmc, ap, inp = eval_market1501_filtered(dist, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank, kept=mask)
        out[name] = {"rank1": float(cmc[0] * 100), "rank5": float(cmc[min(4, len(cmc) - 1)] * 100),
                     "mAP": float(np.mean(ap) * 100), "mINP": float(np.mean(inp) * 100)}
    out["rank1_loss"] = out["full"]["rank1"] - out["filtered"]["rank1"]
    out["mAP_loss"] = out["full"]["mAP"] - out["filtered"]["mAP"]
    return out
