"""Person-search evaluation (issue 12): IoU, AP x recall rate, top-k, galleries, against hand computations."""

import numpy as np
import pytest

from fastreid_ext.evaluation.search_evaluation import (GalleryFrame, average_precision, box_iou, cuhk_sysu_gallery,
                                                       localisation_success, prw_camera, prw_gallery,
                                                       query_search_result, search_metrics)


def test_box_iou_by_hand():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 20]])
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30]])
    iou = box_iou(a, b)
    np.testing.assert_allclose(iou, [[50 / 150, 1.0, 0.0], [50 / 250, 0.5, 0.0]])
    assert box_iou(np.array([[0, 0, 0, 0]]), np.array([[0, 0, 0, 0]]))[0, 0] == 0  # empty boxes: no NaN


def test_average_precision_matches_scikit_learn_with_ties():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 30)
        y[0] = 1
        s = rng.integers(0, 8, 30) / 8.0  # many ties
        assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert average_precision([0, 0], [0.3, 0.2]) == 0.0
    # by hand: ranks 1 (miss), 2 (hit), 3 (hit) -> (1/2 + 2/3) / 2
    assert average_precision([0, 1, 1], [0.9, 0.8, 0.7]) == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_search_ap_times_recall_rate_topk_and_one_match_per_frame_by_hand():
    gt1, gt2 = np.array([0, 0, 10, 20]), np.array([50, 50, 60, 70])
    q1 = [
        # two boxes overlap the truth enough (IoU 1.0 and 0.5): only the higher-scored one is the match
        GalleryFrame(np.array([[0, 0, 10, 20], [0, 0, 10, 10]]), np.array([0.9, 0.95]), gt1),
        GalleryFrame(np.array([[100, 100, 110, 120]]), np.array([0.8]), gt2),  # the person missed here
        GalleryFrame(np.array([[0, 0, 5, 5]]), np.array([0.7]), None),  # a frame without the person
    ]
    r = query_search_result(q1)
    assert [hit for *_, hit in r["ranked"]] == [True, False, False, False]
    assert r["recall_rate"] == 0.5 and r["ap"] == pytest.approx(1.0 * 0.5)
    q2 = [GalleryFrame(np.array([[0, 0, 10, 20], [30, 0, 40, 20]]), np.array([0.6, 0.9]), gt1)]
    r2 = query_search_result(q2)
    assert r2["ap"] == pytest.approx(0.5) and not r2["hits"][1] and r2["hits"][5]
    q3 = [GalleryFrame(np.array([[0, 0, 10, 20]]), np.array([0.9]), None)]  # nobody to find: not evaluated
    m = search_metrics([q1, q2, q3], topk=(1, 5))
    assert m["mAP"] == pytest.approx(50.0) and m["top-1"] == pytest.approx(50.0) and m["top-5"] == pytest.approx(100.0)
    assert m["queries"] == 2 and m["skipped"] == 1
    # IoU just under 0.5 is not a match
    q4 = [GalleryFrame(np.array([[0, 0, 10, 9.9]]), np.array([0.9]), gt1)]
    assert query_search_result(q4)["ap"] == 0.0
    with pytest.raises(ValueError, match="2 boxes but 1 scores"):
        query_search_result([GalleryFrame(np.zeros((2, 4)), np.zeros(1), gt1)])


def test_localisation_success_and_galleries():
    final = np.array([[0, 0, 10, 20], [0, 0, 10, 9]])
    gt = np.array([[0, 0, 10, 20], [0, 0, 10, 20]])
    assert localisation_success(final, gt) == pytest.approx(50.0)
    frames = ["c1s1_000151.jpg", "c1s1_000200.jpg", "c2s1_000100.jpg", "c6s2_000010.jpg"]
    assert prw_camera("frames/c6s2_000010.jpg") == 6
    assert prw_gallery("c1s1_000151.jpg", frames) == frames[1:]
    assert prw_gallery("c1s1_000151.jpg", frames, multi_camera=True) == frames[2:]
    with pytest.raises(ValueError, match="not a PRW frame name"):
        prw_camera("s1.jpg")
    assert cuhk_sysu_gallery(["s2.jpg", "s3.jpg"], "s1.jpg") == ["s2.jpg", "s3.jpg"]
    with pytest.raises(ValueError, match="query's own frame"):
        cuhk_sysu_gallery(["s1.jpg", "s3.jpg"], "s1.jpg")


def test_evaluate_search_on_a_prw_set_oracle_and_shuffled(tmp_path):
    """Found boxes = the annotated ones; features one-hot in the identity (unlabelled people: their own
    direction): every query finds its person in every frame -> 100 mAP. Features given to the wrong
    boxes -> far lower. The multi-camera protocol drops same-camera frames."""
    from fastreid_ext.data.search import read_prw
    from fastreid_ext.data.synthetic.scenes import generate_scenes
    from fastreid_ext.evaluation.search_evaluation import evaluate_search, query_frames

    generate_scenes(str(tmp_path / "s"), num_train_ids=2, num_test_ids=6, seed=1)
    s = read_prw(str(tmp_path / "s"))
    dim = 64

    def onehot(pid, k):
        v = np.zeros(dim)
        v[pid if pid >= 0 else 40 + k % 20] = 1
        return v

    det = {n: (s.frames[n].boxes, np.array([onehot(p, k) for k, p in enumerate(s.frames[n].pids)]).reshape(-1, dim))
           for n in s.test}
    qf = [onehot(q.pid, 0) for q in s.queries]
    m = evaluate_search(s, det, qf)
    assert m["mAP"] == pytest.approx(100.0) and m["top-1"] == pytest.approx(100.0) and m["queries"] == len(s.queries)
    rng = np.random.default_rng(0)
    shuffled = {n: (b, f[rng.permutation(len(f))] if n != s.test[0] else f) for n, (b, f) in det.items()}
    shuffled = {n: (b, np.roll(f, 1, axis=0)) for n, (b, f) in shuffled.items()}
    assert evaluate_search(s, shuffled, qf)["mAP"] < 90
    q = s.queries[0]
    all_frames = query_frames(s, q, det, qf[0])
    multi = query_frames(s, q, det, qf[0], multi_camera=True)
    cam = s.frames[q.frame].cam
    assert {f.name for f in multi} == {f.name for f in all_frames if s.frames[f.name].cam != cam}
    assert q.frame not in {f.name for f in all_frames}
    with pytest.raises(ValueError, match="query features for"):
        evaluate_search(s, det, qf[:-1])


def test_search_baseline_crops_like_the_test_transform_and_scores_oracle_features(tmp_path):
    """The two-step baseline: a crop is exactly its box's pixels (resized bicubic to the re-id input), and
    every query is evaluated over its gallery with a stand-in model (the crop's mean colour) on the
    annotated boxes; the measured run with a trained re-id model is tools/search_baseline.py's (README)."""
    import torch
    from PIL import Image

    from fastreid_ext.data.search import read_prw
    from fastreid_ext.data.synthetic.scenes import generate_scenes
    from fastreid_ext.evaluation.search_baseline import crop_batch, run_search_baseline

    img = Image.fromarray(np.arange(40 * 60 * 3, dtype=np.uint8).reshape(40, 60, 3) % 251)
    crops = crop_batch(img, np.array([[10, 5, 30, 35]]), (30, 20))
    assert crops.shape == (1, 3, 30, 20)  # a 20x30 box at 30x20 is its pixels unchanged
    np.testing.assert_array_equal(crops[0].permute(1, 2, 0).numpy(), np.asarray(img)[5:35, 10:30].astype(np.float32))

    generate_scenes(str(tmp_path / "s"), num_train_ids=2, num_test_ids=5, seed=4)
    s = read_prw(str(tmp_path / "s"))

    class MeanColour(torch.nn.Module):
        def forward(self, batch):
            return batch["images"].mean(dim=(2, 3)) - 128

    class Cfg:
        class INPUT:
            SIZE_TEST = [32, 16]

    m = run_search_baseline(MeanColour(), Cfg, s)
    assert m["queries"] == len(s.queries) > 0 and 0 < m["mAP"] <= 100
