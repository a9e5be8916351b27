"""APR attribute-filtered retrieval (fastreid_ext.evaluation.attr_filter) against brute force."""

import numpy as np
import pytest
import torch

from fastreid_ext.evaluation.attr_filter import (UNKNOWN, FilteredSearch, compatible_mask, confident_classes,
                                                 evaluate_filtered, full_search)

HEADS = [2, 4, 3, 2, 9]  # classes per attribute head


def _random_problem(seed, nq=60, ng=400, dim=24, sharp=2.5):
    """Random features and per-head probabilities with a spread of confidences."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((nq, dim)).astype(np.float32)
    g = rng.standard_normal((ng, dim)).astype(np.float32)

    def probs(n):
        out = []
        for k in HEADS:
            z = rng.standard_normal((n, k)) * sharp
            p = np.exp(z - z.max(1, keepdims=True))
            out.append((p / p.sum(1, keepdims=True)).astype(np.float32))
        return out

    return q, g, probs(nq), probs(ng)


def _reference(q, g, qp, gp, threshold, metric):
    """Brute force: every distance, then excluded pairs set to +inf."""
    full = full_search(q, g, metric).distmat
    ok = compatible_mask(confident_classes(qp, threshold), confident_classes(gp, threshold))
    return np.where(ok, full, np.inf), ok


def _assert_same_ranking(dist, ref, ok, atol=1e-5):
    """Same kept sets, same distances, and the filtered order of kept items is the reference order
    (reference distances non-decreasing along it; robust to float ties)."""
    assert np.array_equal(np.isfinite(dist), ok)
    np.testing.assert_allclose(dist[ok], ref[ok], rtol=1e-5, atol=atol)
    order = np.argsort(dist, axis=1, kind="stable")
    for i in range(len(dist)):
        kept = order[i][:ok[i].sum()]
        assert set(kept) == set(np.flatnonzero(ok[i]))
        assert np.all(np.diff(ref[i, kept]) >= -atol * (1 + np.abs(ref[i, kept]).max(initial=0)))


# ------------------------------------------------------------------------------------------------
def test_confident_classes_thresholds():
    head0 = np.array([[0.9, 0.1], [0.6, 0.4], [0.5, 0.5], [0.3, 0.7]], np.float32)
    head1 = np.array([[0.2, 0.7, 0.1], [0.34, 0.33, 0.33], [0.1, 0.1, 0.8], [0.05, 0.05, 0.9]], np.float32)
    probs = [head0, torch.from_numpy(head1)]  # numpy or torch
    np.testing.assert_array_equal(confident_classes(probs, 0.7), [[0, 1], [-1, -1], [-1, 2], [1, 2]])
    np.testing.assert_array_equal(confident_classes(probs, 0.6), [[0, 1], [0, -1], [-1, 2], [1, 2]])
    np.testing.assert_array_equal(confident_classes(probs, 0.85), [[0, -1], [-1, -1], [-1, -1], [-1, 2]])
    # 0: every prediction is confident (argmax); > 1: none is
    np.testing.assert_array_equal(confident_classes(probs, 0.0), [[0, 1], [0, 0], [0, 2], [1, 2]])
    assert (confident_classes(probs, 1.01) == UNKNOWN).all()
    assert confident_classes(probs, 0.7).dtype == np.int64
    with pytest.raises(ValueError, match="rows"):
        confident_classes([head0, head1[:3]], 0.7)
    with pytest.raises(ValueError, match="empty"):
        confident_classes([], 0.7)


def test_compatible_mask_hand_example():
    # heads: gender (2), upper colour (3)
    q = np.array([[0, 2],     # confident on both
                  [-1, 1],    # gender unknown
                  [-1, -1]])  # nothing confident
    g = np.array([[0, 2],     # agrees with q0
                  [1, 2],     # gender conflicts with q0
                  [0, -1],    # colour unknown
                  [-1, 1],    # gender unknown, colour 1
                  [1, 1]])
    expected = np.array([[1, 0, 1, 0, 0],
                         [0, 0, 1, 1, 1],
                         [1, 1, 1, 1, 1]], bool)
    np.testing.assert_array_equal(compatible_mask(q, g), expected)
    # unknown never excludes; a single confident disagreement does
    assert compatible_mask(np.array([[-1, -1]]), g).all()
    assert not compatible_mask(np.array([[0, 0]]), np.array([[1, 0]]))[0, 0]
    with pytest.raises(ValueError):
        compatible_mask(q, g[:, :1])


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("plan", ["auto", "exact"])
@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.7, 0.9, 1.01])
def test_grouped_search_matches_brute_force(threshold, plan, metric):
    q, g, qp, gp = _random_problem(seed=int(threshold * 100))
    # auto: the default cost model (one block on a problem this small: all filtering by the penalty
    # columns) and one that splits part of the way (blocks + penalties for the heads not split)
    searchers = [FilteredSearch(threshold, metric, plan=plan)]
    if plan == "auto":
        searchers.append(FilteredSearch(threshold, metric, gather_cost=0, small_block_cost=0, leaf_cost=300))
    ref, ok = _reference(q, g, qp, gp, threshold, metric)
    for fs in searchers:
        res = fs.search(q, g, qp, gp)
        _assert_same_ranking(res.distmat, ref, ok)
        assert res.gallery_fraction == pytest.approx(ok.mean())
        np.testing.assert_array_equal(res.kept_per_query, ok.sum(1))
        assert res.num_groups == len(np.unique(confident_classes(qp, threshold), axis=0))
        assert ok.mean() - 1e-12 <= res.computed_fraction <= 1.0
        if plan == "exact":  # the saved work is real: distances computed == pairs kept
            assert res.computed_fraction == pytest.approx(ok.mean())
        # top-k of the kept gallery, reusing the fitted gallery
        k = 15
        top = fs.search(q, None, qp, None, topk=k)
        ref_sorted = np.sort(ref, axis=1)[:, :k]
        for i in range(len(q)):
            n = min(k, ok[i].sum())
            assert (top.topk_idx[i, n:] == -1).all() and np.isinf(top.topk_dist[i, n:]).all()
            idx = top.topk_idx[i, :n]
            assert ok[i, idx].all() and len(set(idx)) == n
            np.testing.assert_allclose(ref[i, idx], ref_sorted[i, :n], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(top.topk_dist[i, :n], ref[i, idx], rtol=1e-5, atol=1e-5)
    if threshold > 1:  # nothing confident: identical to the full search
        full = full_search(q, g, metric)
        np.testing.assert_allclose(res.distmat, full.distmat, rtol=1e-5, atol=1e-5)
        assert res.gallery_fraction == 1.0 and res.computed_fraction == 1.0
        ftop = full_search(q, g, metric, topk=k)
        np.testing.assert_allclose(top.topk_dist, ftop.topk_dist, rtol=1e-5, atol=1e-5)
    if threshold == 0.0:  # everything confident: a gallery image is kept only if it agrees on all heads
        conf_q, conf_g = confident_classes(qp, 0.0), confident_classes(gp, 0.0)
        np.testing.assert_array_equal(ok, (conf_q[:, None, :] == conf_g[None, :, :]).all(-1))


def test_excluded_rank_after_kept_and_padding():
    q, g, qp, gp = _random_problem(seed=3, nq=20, ng=150)
    res = FilteredSearch(0.6).search(q, g, qp, gp)
    ok = np.isfinite(res.distmat)
    assert 0 < ok.mean() < 1
    order = np.argsort(res.distmat, axis=1)
    for i in range(len(q)):
        n = ok[i].sum()
        assert ok[i, order[i][:n]].all() and not ok[i, order[i][n:]].any()
    # a large value instead of +inf, for rankers that dislike inf
    res_big = FilteredSearch(0.6, excluded_value=1e6).search(q, g, qp, gp)
    assert (res_big.distmat[~ok] == 1e6).all()
    # top-k larger than any kept set: rows padded with -1 / +inf
    top = FilteredSearch(0.6).search(q, g, qp, gp, topk=150)
    for i in range(len(q)):
        n = ok[i].sum()
        assert (top.topk_idx[i, :n] >= 0).all() and (top.topk_idx[i, n:] == -1).all()
        assert np.isinf(top.topk_dist[i, n:]).all()


def test_inputs_torch_reuse_and_errors():
    q, g, qp, gp = _random_problem(seed=5, nq=10, ng=50)
    fs = FilteredSearch(0.7)
    res_np = fs.search(q, g, qp, gp)
    res_t = fs.search(torch.from_numpy(q), torch.from_numpy(g), [torch.from_numpy(p) for p in qp],
                      [torch.from_numpy(p) for p in gp])
    np.testing.assert_allclose(res_np.distmat, res_t.distmat)
    assert fs.search(q, None, qp, None).distmat.shape == (10, 50)  # fitted gallery reused
    assert res_np.time_s > 0 and fs.index_time_s > 0
    with pytest.raises(RuntimeError, match="no gallery"):
        FilteredSearch().search(q, None, qp, None)
    with pytest.raises(ValueError, match="classes"):
        fs.search(q, None, qp[:-1] + [qp[-1][:, :3]], None)
    with pytest.raises(ValueError, match="dim"):
        fs.search(q[:, :5], None, qp, None)
    with pytest.raises(ValueError, match="metric"):
        FilteredSearch(metric="hamming")
    with pytest.raises(ValueError, match="topk"):
        fs.search(q, None, qp, None, topk=0)
    import faiss

    if faiss.get_num_gpus() == 0:
        with pytest.raises(RuntimeError, match="GPU"):
            FilteredSearch(use_gpu=True).search(q, g, qp, gp)


def test_end_to_end_perfect_attributes_keep_rank1():
    """Correct, confident attributes: every true match is kept, so Rank-1 / mAP cannot drop, while
    the gallery shrinks several times."""
    rng = np.random.default_rng(0)
    n_ids, dim = 60, 32
    attrs = np.stack([rng.integers(0, k, n_ids) for k in HEADS], 1)
    centres = rng.standard_normal((n_ids, dim)).astype(np.float32)
    g_pid = np.repeat(np.arange(n_ids), 4)
    g_cam = np.tile(np.arange(4), n_ids)
    q_pid = np.arange(n_ids)
    q_cam = np.full(n_ids, 4)
    noise = 0.9

    def feats(pid):
        return centres[pid] + noise * rng.standard_normal((len(pid), dim)).astype(np.float32)

    def probs(pid):  # the true class with probability 0.9
        out = []
        for h, k in enumerate(HEADS):
            p = np.full((len(pid), k), 0.1 / (k - 1), np.float32)
            p[np.arange(len(pid)), attrs[pid, h]] = 0.9
            out.append(p)
        return out

    qf, gf = feats(q_pid), feats(g_pid)
    full = full_search(qf, gf)
    res = FilteredSearch(0.7).search(qf, gf, probs(q_pid), probs(g_pid))
    m = evaluate_filtered(full.distmat, res.distmat, q_pid, g_pid, q_cam, g_cam)
    assert 20 < m["full"]["rank1"] < 100  # a non-trivial problem
    assert m["rank1_loss"] <= 0 and m["mAP_loss"] <= 0
    assert res.reduction > 5
    same = (attrs[q_pid][:, None, :] == attrs[g_pid][None, :, :]).all(-1)
    np.testing.assert_array_equal(np.isfinite(res.distmat), same)
