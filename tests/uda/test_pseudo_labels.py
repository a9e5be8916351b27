"""Pseudo-labels (fastreid_ext.uda): the sparse Jaccard distance equals FastReID's dense
``compute_jaccard_distance``; DBSCAN on it gives the dense labels; eps selection equals MMT's dense
rule; the no-cluster error; centroids; the per-epoch labeler."""

import logging

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.cluster import DBSCAN

from fastreid_ext.uda import (DBSCANPseudoLabeler, NoClustersError, cluster_centroids, dbscan_labels,
                              generate_pseudo_labels, jaccard_distance, select_eps)
from fastreid_ext.uda.jaccard import to_dense


def clustered(n=300, dim=32, seed=0, spread=0.8, duplicates=3):
    """Small overlapping Gaussian clusters (4-16 points), a few noise points and exact duplicates,
    L2-normalised: neighbourhoods mix across clusters, so every branch of the encoding runs."""
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < int(0.9 * n):
        sizes.append(int(rng.integers(4, 17)))
    centres = rng.standard_normal((len(sizes), dim))
    x = np.concatenate([c + spread * rng.standard_normal((s, dim)) for c, s in zip(centres, sizes)])
    x = np.concatenate([x, 2 * rng.standard_normal((max(n - len(x), 0), dim))])[:n]
    y = np.concatenate([np.repeat(np.arange(len(sizes)), sizes), len(sizes) + np.arange(n)])[:n]
    x[1:1 + duplicates] = x[0]
    y[1:1 + duplicates] = y[0]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    perm = rng.permutation(n)
    return x[perm].astype(np.float32), y[perm]


def reference(x, k1, k2):
    from fastreid.utils.compute_dist import compute_jaccard_distance  # compat P12: CPU faiss

    return compute_jaccard_distance(torch.from_numpy(x), k1=k1, k2=k2)


def mmt_eps(dist, rho):
    """MMT's epoch-0 rule, verbatim (yxgeee/MMT mmt_train_dbscan.py)."""
    tri_mat = np.triu(dist, 1)
    tri_mat = tri_mat[np.nonzero(tri_mat)]
    tri_mat = np.sort(tri_mat, axis=None)
    top_num = np.round(rho * tri_mat.size).astype(int)
    return tri_mat[:top_num].mean()


def sparsify(dense):
    """The dense reference matrix in the sparse convention: entries < 1 and the diagonal stored."""
    keep = (dense < 1) | np.eye(len(dense), dtype=bool)
    r, c = np.nonzero(keep)
    return sp.csr_matrix((dense[r, c], (r, c)), shape=dense.shape)


CASES = {  # name -> (n, dim, k1, k2, duplicates)
    "k1=20,k2=6": (300, 32, 20, 6, 3),
    "k1=30,k2=6 (MMT)": (260, 16, 30, 6, 3),
    "k1=15 (round(7.5) = 8), k2=1 (no QE), 60 duplicates (empty V rows)": (200, 16, 15, 1, 60),
}


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def case(request):
    n, dim, k1, k2, dup = CASES[request.param]
    x, y = clustered(n, dim, seed=n, duplicates=dup)
    return x, y, k1, k2, reference(x, k1, k2), jaccard_distance(x, k1=k1, k2=k2)


def test_jaccard_equals_fastreid_reference(case):
    x, _, k1, k2, ref, ours = case
    assert sp.issparse(ours) and ours.dtype == np.float32 and ours.data.min() >= 0
    np.testing.assert_allclose(to_dense(ours), ref, rtol=0, atol=1e-5)
    # the stored pairs are exactly the reference's pairs below 1, plus the whole diagonal (1.0 for
    # an isolated point, so that DBSCAN does not count it as its own neighbour)
    stored = np.zeros(ref.shape, dtype=bool)
    coo = ours.tocoo()
    stored[coo.row, coo.col] = True
    assert stored.diagonal().all()
    np.testing.assert_array_equal(stored & ~np.eye(len(x), dtype=bool), (ref < 1) & ~np.eye(len(x), dtype=bool))


def test_dbscan_labels_equal_dense_on_same_distances(case):
    _, _, _, _, ref, _ = case
    sparse_ref = sparsify(ref)
    for eps, min_samples in [(0.2, 4), (0.45, 4), (0.6, 4), (0.75, 4), (0.6, 1)]:  # 1: isolated points
        dense = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(ref)
        if dense.max() < 0:
            with pytest.raises(NoClustersError):
                dbscan_labels(sparse_ref, eps, min_samples)
            continue
        np.testing.assert_array_equal(dbscan_labels(sparse_ref, eps, min_samples), dense)


def test_pseudo_labels_equal_reference_pipeline(case):
    """Features -> labels, ours vs FastReID's distance + dense DBSCAN, at an eps that no distance
    sits near (so float32 rounding cannot decide a neighbour)."""
    x, _, k1, k2, ref, _ = case
    vals = np.unique(ref[(ref > 0.4) & (ref < 0.7)])
    gap = np.argmax(np.diff(vals))
    eps = float(vals[gap] + vals[gap + 1]) / 2
    dense = DBSCAN(eps=eps, min_samples=4, metric="precomputed").fit_predict(ref)
    assert dense.max() >= 1  # a meaningful comparison: several clusters
    ours = generate_pseudo_labels(x, eps=eps, k1=k1, k2=k2)
    np.testing.assert_array_equal(ours.labels, dense)
    assert ours.num_clusters == dense.max() + 1 and ours.num_outliers == (dense < 0).sum()


@pytest.mark.parametrize("rho", [1.6e-3, 0.02, "past the stored pairs"])
def test_select_eps_equals_mmt_rule(case, rho):
    _, _, _, _, ref, _ = case
    sparse_ref = sparsify(ref)
    if isinstance(rho, str):  # more pairs than are stored: the mean includes absent pairs at 1.0
        upper = ref[np.triu_indices(len(ref), 1)]
        stored = ((upper < 1) & (upper != 0)).sum() / (upper != 0).sum()
        rho = 1 - (1 - stored) / 2
        assert round(rho * (upper != 0).sum()) > ((upper < 1) & (upper != 0)).sum()
    assert select_eps(sparse_ref, rho) == pytest.approx(float(mmt_eps(ref, rho)), rel=1e-5)


def test_no_clusters_error_names_eps_and_suggests_one():
    x = np.random.default_rng(1).standard_normal((240, 32)).astype(np.float32)  # no cluster structure
    dist = jaccard_distance(x, k1=20, k2=6)
    with pytest.raises(NoClustersError) as err:
        dbscan_labels(dist, eps=0.01)
    msg = str(err.value)
    assert isinstance(err.value, ValueError)
    assert "no cluster" in msg and "eps=0.01" in msg and "min_samples=4" in msg and "50%:" in msg
    suggested = float(msg.split("suggested eps: ")[1].split()[0])
    assert 0.01 < suggested < 1
    labels = dbscan_labels(dist, suggested)  # the suggestion works: about half the points are core
    assert labels.max() >= 0 and 0 < (labels < 0).mean() < 0.9


def test_eps_outside_zero_one_is_refused():
    dist = jaccard_distance(clustered(60, 8)[0], k1=10, k2=3)
    for eps in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="eps must be in"):
            dbscan_labels(dist, eps)


def test_cluster_centroids_numpy_and_torch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 6)).astype(np.float32)
    labels = rng.integers(-1, 4, size=50)
    expected = np.stack([x[labels == c].mean(0) for c in range(4)])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(cluster_centroids(x, labels), expected, atol=1e-6)
    t = cluster_centroids(torch.from_numpy(x), torch.from_numpy(labels))
    assert isinstance(t, torch.Tensor) and t.shape == (4, 6)
    np.testing.assert_allclose(t.numpy(), expected, atol=1e-6)
    raw = cluster_centroids(x, labels, normalize=False)
    np.testing.assert_allclose(raw[2], x[labels == 2].mean(0), atol=1e-6)
    with pytest.raises(ValueError, match="without gaps"):
        cluster_centroids(x, np.where(labels == 1, 3, labels))


def test_labeler_keeps_first_eps_and_logs(caplog):
    x, y = clustered(300, 32, seed=3)
    labeler = DBSCANPseudoLabeler(k1=20, k2=6)  # eps from the distances at the first call
    with caplog.at_level(logging.INFO, logger="fastreid_ext.uda.pseudo_labels"):
        first = labeler(x, true_labels=y)
    assert labeler.eps == first.eps == pytest.approx(select_eps(jaccard_distance(x, k1=20, k2=6)))
    for key in ("num_clusters", "num_outliers", "eps", "time_s", "rss_peak_mb", "nmi", "ari"):
        assert key in first.stats
    assert f"{first.num_clusters} clusters, {first.num_outliers} outliers" in caplog.text and "NMI" in caplog.text
    second = labeler(clustered(300, 32, seed=4)[0])  # a later epoch: same eps, no true labels
    assert second.eps == first.eps and "nmi" not in second.stats
    assert "first call" in second.stats["eps_source"]
    np.testing.assert_array_equal(labeler(x).labels, first.labels)  # deterministic


def test_knn_runs_on_faiss_gpu_when_one_is_visible(monkeypatch):
    import faiss

    from fastreid_ext.uda import jaccard

    calls = []

    def fake_knn_gpu(res, xq, xb, k):
        calls.append(k)
        return faiss.knn(xq, xb, k)

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "StandardGpuResources", lambda: object())
    monkeypatch.setattr(faiss, "knn_gpu", fake_knn_gpu)
    x = clustered(80, 8)[0]
    jaccard.jaccard_distance(x, k1=10, k2=3)
    assert calls == [10]
