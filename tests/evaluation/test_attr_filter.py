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


# ------------------------------------------------------------------------------------------------
# Filtered evaluation: a gallery image the filter dropped is never a hit (kept mask, not +inf order)
# ------------------------------------------------------------------------------------------------
#: gallery of the hand-made case: (pid, camid) of each image
HAND_GALLERY = [(1, 1), (2, 1), (3, 2), (4, 2), (5, 1), (1, 0), (2, 2), (6, 2)]
#: queries: (pid, camid); query 2's identity is not in the gallery (skipped, as FastReID does)
HAND_QUERIES = [(1, 0), (2, 0), (7, 0), (3, 0)]
HAND_DIST = np.array([
    [0.3, 0.1, 0.2, 0.4, 0.5, 0.0, 0.6, 0.7],     # q0: match 0 (dropped); 5 is junk (same pid+cam)
    [0.2, 0.05, 0.1, 0.6, 0.7, 0.8, 0.3, 0.25],  # q1: matches 1 (dropped) and 6 (kept)
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],     # q2: no match in the gallery
    [0.5, 0.4, 0.1, 0.2, 0.3, 0.6, 0.7, 0.8],     # q3: match 2, nothing dropped
], np.float32)
HAND_KEPT = np.array([
    [0, 1, 1, 0, 0, 1, 0, 0],  # q0 keeps 2 images (+ its junk), no true match among them
    [1, 0, 1, 0, 0, 0, 1, 1],
    [1, 1, 1, 1, 1, 1, 1, 1],
    [1, 1, 1, 1, 1, 1, 1, 1],
], bool)


def _hand_ids():
    q, g = np.array(HAND_QUERIES), np.array(HAND_GALLERY)
    return q[:, 0], g[:, 0], q[:, 1], g[:, 1]


@pytest.mark.parametrize("dropped_value", [np.inf, 1e6, 0.0, -1.0])
def test_filtered_evaluation_never_counts_a_dropped_image_hand_case(dropped_value):
    """q0 keeps 2 gallery images, neither a true match, and its only true match (index 0) was
    dropped: a miss at EVERY rank (FastReID's ranker on a +inf matrix puts the dropped match 3rd:
    a Rank-5 hit). q1: the kept match is 4th among the kept images, the other match was dropped:
    AP = (1/4) / 2 (denominator: ALL true matches). The result does not depend on the distances
    given to dropped images (the kept mask is used, not their order)."""
    from fastreid_ext.evaluation.attr_filter import eval_market1501_filtered

    qp, gp, qc, gc = _hand_ids()
    dist = np.where(HAND_KEPT, HAND_DIST, np.float32(dropped_value))
    cmc, ap, inp = eval_market1501_filtered(dist, qp, gp, qc, gc, max_rank=50, kept=HAND_KEPT)
    # valid queries: q0, q1, q3 (q2's identity is absent from the gallery)
    np.testing.assert_allclose(ap, [0.0, 0.125, 1.0])
    np.testing.assert_allclose(inp, [0.0, 0.0, 1.0])  # a dropped match is never retrieved: INP 0
    # CMC per query: q0 never; q1 from rank 4 (4th kept image); q3 from rank 1
    expected = (np.zeros(50) + np.r_[np.zeros(3), np.ones(47)] + np.ones(50)) / 3
    np.testing.assert_allclose(cmc, expected, atol=1e-7)
    cmc0, ap0, inp0 = eval_market1501_filtered(dist[:1], qp[:1], gp, qc[:1], gc, max_rank=5, kept=HAND_KEPT[:1])
    assert cmc0.tolist() == [0.0] * 5 and ap0 == [0.0] and inp0 == [0.0]  # Rank-5: a miss

    m = evaluate_filtered(HAND_DIST, dist, qp, gp, qc, gc, kept=HAND_KEPT)
    assert m["filtered"]["rank1"] == pytest.approx(100 / 3) and m["filtered"]["rank5"] == pytest.approx(200 / 3)
    assert m["filtered"]["mAP"] == pytest.approx(100 * (0 + 0.125 + 1) / 3)
    assert m["filtered"]["mINP"] == pytest.approx(100 / 3)
    # full gallery by hand: q0 match 3rd (AP 1/3), q1 matches 1st and 5th (AP (1 + 2/5) / 2), q3 1st
    assert m["full"]["rank1"] == pytest.approx(200 / 3) and m["full"]["rank5"] == pytest.approx(100)
    assert m["full"]["mAP"] == pytest.approx(100 * (1 / 3 + 0.7 + 1) / 3)
    assert m["full"]["mINP"] == pytest.approx(100 * (1 / 3 + 0.4 + 1) / 3)
    assert m["rank1_loss"] == pytest.approx(100 / 3)


@pytest.mark.parametrize("use_cython", [False, True])
def test_evaluate_filtered_on_inf_matrix_is_not_fooled_by_the_ranker(use_cython, monkeypatch):
    """The former evaluation ranked the +inf matrix with FastReID's ranker (Cython or Python, via
    compat): q0's dropped true match then sat 3rd and counted as a Rank-5 hit. Without an explicit
    mask, evaluate_filtered takes +inf as "dropped" and still never counts it."""
    from fastreid_ext import compat

    qp, gp, qc, gc = _hand_ids()
    dist = np.where(HAND_KEPT, HAND_DIST, np.float32(np.inf))
    orig = compat.evaluate_rank
    monkeypatch.setattr(compat, "evaluate_rank", lambda *a, **k: orig(*a, **{**k, "use_cython": use_cython}))
    one = slice(0, 1)
    m = evaluate_filtered(HAND_DIST[one], dist[one], qp[one], gp, qc[one], gc, max_rank=5)
    assert m["filtered"]["rank5"] == 0.0 and m["filtered"]["mAP"] == 0.0
    assert m["full"]["rank5"] == 100.0 and m["full"]["mAP"] == pytest.approx(100 / 3)


def _bruteforce_filtered(dist, kept, qp, gp, qc, gc, max_rank):
    """Definition: per query, drop junk (same pid and camera), rank the KEPT images by distance;
    CMC / AP count only kept true matches, AP divides by all true matches; INP is 0 if a true match
    was dropped."""
    cmcs, aps, inps = [], [], []
    for i in range(len(qp)):
        valid = ~((gp == qp[i]) & (gc == qc[i]))
        match = (gp == qp[i]) & valid
        if not match.any():
            continue
        idx = [j for j in sorted(range(len(gp)), key=lambda j: (float(dist[i, j]), j)) if valid[j] and kept[i, j]]
        found = [bool(match[j]) for j in idx]
        cmc = [float(any(found[:r + 1])) for r in range(max_rank)]
        ap = sum(sum(found[:r + 1]) / (r + 1) for r, f in enumerate(found) if f) / match.sum()
        inp = (sum(found) / (max(r for r, f in enumerate(found) if f) + 1)) if sum(found) == match.sum() else 0.0
        cmcs.append(cmc), aps.append(ap), inps.append(inp)
    return np.mean(cmcs, 0), np.array(aps), np.array(inps)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_filtered_evaluation_matches_its_definition(seed):
    from fastreid_ext.evaluation.attr_filter import eval_market1501_filtered

    rng = np.random.default_rng(seed)
    nq, ng = 15, 40
    qp, gp = rng.integers(0, 6, nq), rng.integers(0, 8, ng)
    qc, gc = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
    dist = rng.random((nq, ng)).astype(np.float32)
    kept = rng.random((nq, ng)) < 0.5
    ref = _bruteforce_filtered(dist, kept, qp, gp, qc, gc, 10)
    got = eval_market1501_filtered(np.where(kept, dist, -5.0), qp, gp, qc, gc, max_rank=10, kept=kept)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_filtered_evaluation_equals_fastreid_rankers_when_nothing_is_dropped(monkeypatch):
    """Nothing dropped: the same numbers as FastReID's compiled ranker (as compat calls it) and as
    compat's Python ranker (FastReID's market1501 protocol)."""
    from fastreid_ext import compat
    from fastreid_ext.evaluation.attr_filter import eval_market1501_filtered

    rng = np.random.default_rng(7)
    nq, ng, max_rank = 25, 90, 20
    qp = rng.integers(0, 10, nq)
    gp = np.concatenate([qp, rng.integers(0, 14, ng - nq)])
    qc, gc = rng.integers(0, 4, nq), rng.integers(0, 4, ng)
    dist = rng.random((nq, ng)).astype(np.float32)  # no ties
    ours = eval_market1501_filtered(dist, qp, gp, qc, gc, max_rank=max_rank, kept=np.ones((nq, ng), bool))
    assert all(np.array_equal(a, b) for a, b in
               zip(ours, eval_market1501_filtered(dist, qp, gp, qc, gc, max_rank=max_rank)))
    python = compat.evaluate_rank(dist, qp, gp, qc, gc, max_rank=max_rank, use_cython=False)
    for a, b in zip(ours, python):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    cy = compat._import_cython_ranker()
    if cy is None:
        pytest.skip("FastReID's Cython ranker is not built (python -m fastreid_ext.compat --build-ranker)")
    called = []
    monkeypatch.setattr(compat, "_import_cython_ranker", lambda: lambda *a: called.append(1) or cy(*a))
    compiled = compat.evaluate_rank(dist, qp, gp, qc, gc, max_rank=max_rank, use_cython=True)
    assert called == [1], "compat did not use the compiled ranker"
    for a, b in zip(ours, compiled):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_filter_search_reports_its_kept_mask():
    """FilteredSearch's distance-matrix result carries the exact kept mask (gallery order)."""
    q, g, qp, gp = _random_problem(seed=11, nq=30, ng=120)
    fs = FilteredSearch(0.6)
    res = fs.search(q, g, qp, gp)
    ok = compatible_mask(confident_classes(qp, 0.6), confident_classes(gp, 0.6))
    assert res.kept is not None and res.kept.dtype == bool
    np.testing.assert_array_equal(res.kept, ok)
    np.testing.assert_array_equal(fs.kept_mask(qp), ok)


# ------------------------------------------------------------------------------------------------
# Timing: both sides of the speed-up time the same preparation (the query's, not the gallery's)
# ------------------------------------------------------------------------------------------------
class _FakeClock:
    """``time.perf_counter`` that only moves when the preparation hook says so."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


@pytest.fixture
def expensive_preparation(monkeypatch):
    """Feature preparation (normalisation / copy into the search structure, ``_features``) costs
    1000 fake seconds for a gallery and 10 for a query set; nothing else takes any time."""
    from fastreid_ext.evaluation import attr_filter

    clock = _FakeClock()
    orig = attr_filter._features

    def features(x, metric, name):
        clock.now += 1000.0 if name == "gallery" else 10.0
        return orig(x, metric, name)

    monkeypatch.setattr(attr_filter, "time", clock)
    monkeypatch.setattr(attr_filter, "_features", features)
    return clock


@pytest.mark.parametrize("topk", [None, 5])
def test_full_and_filtered_search_time_the_same_preparation(expensive_preparation, topk):
    """Query preparation is timed on both sides, gallery preparation (offline) on neither."""
    from fastreid_ext.evaluation.attr_filter import FullSearch

    q, g, qp, gp = _random_problem(seed=4, nq=12, ng=60)
    full = full_search(q, g, topk=topk)
    fs = FilteredSearch(0.7).fit(g, gp)
    filt = fs.search(q, None, qp, None, topk=topk)
    assert full.time_s == 10.0 and filt.time_s == 10.0
    fitted = FullSearch().fit(g)
    assert fitted.index_time_s == 1000.0 and fs.index_time_s == 1000.0
    assert fitted.search(q, topk=topk).time_s == 10.0


def test_filter_report_speedup_counts_preparation_on_both_sides_or_neither(expensive_preparation):
    from fastreid_ext.evaluation.attr_evaluation import filter_report

    q, g, qp, gp = _random_problem(seed=6, nq=12, ng=60)
    feats = np.concatenate([q, g])
    probs = [np.concatenate([a, b]) for a, b in zip(qp, gp)]
    pids = np.concatenate([np.arange(12), np.arange(60) % 12])
    cams = np.concatenate([np.zeros(12, int), np.ones(60, int)])
    out = filter_report(feats, probs, pids, cams, 12, 0.7, extra_plans=("auto",))
    assert out["filter-speedup"] == 1.0 and out["filter-speedup-auto"] == 1.0
