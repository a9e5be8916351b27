"""NPSM (issue 12): the search loop (nested regions, the final proposal choice, teacher forcing), the
registered box-inside loss, the person-search loaders and evaluator (also across 2 gloo processes), and the
errors for misuse.
The end-to-end training run is tests/modeling/test_npsm_e2e.py."""

import numpy as np
import pytest
import torch

from conftest import COMMON, make_cfg

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = "configs/Synthetic/npsm_R18.yml"


def _cfg(scenes_root, *opts):
    return make_cfg(CONFIG, COMMON + ["DATASETS.ROOT", str(scenes_root), "MODEL.HEADS.NUM_CLASSES", "8", *opts])


@pytest.fixture(scope="module")
def npsm(scenes_root):
    from fastreid.modeling import build_model

    from fastreid_ext.data.search.loader import build_search_test_loader

    cfg = _cfg(scenes_root)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    _, test_set = build_search_test_loader(cfg, "SyntheticScenes")
    return cfg, model, test_set


def _inside(inner, outer, tol=1e-4):
    return (inner[..., 0] >= outer[..., 0] - tol) & (inner[..., 1] >= outer[..., 1] - tol) & \
        (inner[..., 2] <= outer[..., 2] + tol) & (inner[..., 3] <= outer[..., 3] + tol)


def test_search_regions_nest_and_the_final_region_is_a_proposal(npsm):
    from fastreid_ext.modeling.layers.npsm import region_proposals

    cfg, model, test_set = npsm
    b = test_set.batch(0)
    with torch.no_grad():
        out = model.inference(b)
    traj = out["trajectory"]
    P, T1 = traj.shape[:2]
    assert T1 == cfg.MODEL.NPSM.STEPS + 1 and P == len(b["pairs"])
    assert out["attention"].shape == (P, cfg.MODEL.NPSM.STEPS, cfg.MODEL.NPSM.POOL_SIZE, cfg.MODEL.NPSM.POOL_SIZE)
    torch.testing.assert_close(out["attention"].sum((2, 3)), torch.ones(P, cfg.MODEL.NPSM.STEPS))
    h, w = b["images"].shape[-2:]
    assert torch.equal(traj[:, 0], torch.tensor([0.0, 0.0, w, h]).expand(P, 4))
    assert _inside(traj[:, 1:], traj[:, :-1]).all(), "a step left the previous region"
    areas = (traj[..., 2] - traj[..., 0]) * (traj[..., 3] - traj[..., 1])
    assert (areas[:, -1] < 0.25 * areas[:, 0]).all(), "the search did not shrink the region"
    for i, (_, fj) in enumerate(b["pairs"].tolist()):
        cands = region_proposals(b["proposals"][fj], traj[i, -2])
        assert (cands - out["boxes"][i]).abs().sum(1).min() < 1e-4, "the final region is not one of the proposals"
    # different queries in the same frame are searched differently (the query drives the attention)
    same_frame = b["pairs"][:, 1] == b["pairs"][0, 1]
    assert len({tuple(a.round(decimals=5).flatten().tolist()) for a in out["attention"][same_frame, 0]}) > 1
    # scores are the cosine of the final region's feature with its query's feature
    q = torch.nn.functional.normalize(out["query_features"], dim=1)[b["pairs"][:, 0]]
    torch.testing.assert_close(out["scores"], (torch.nn.functional.normalize(out["features"], dim=1) * q).sum(1))


def test_teacher_forcing_keeps_the_person_and_ends_on_the_tightest_proposal(npsm):
    from fastreid_ext.data.search.common import box_iou
    from fastreid_ext.modeling.layers.npsm import box_outside_fraction, cluster_subregions, region_proposals

    cfg, model, test_set = npsm
    s = test_set.s
    name = s.test[0]
    fr = s.frames[name]
    people = np.nonzero(fr.pids >= 0)[0]
    b = test_set.batch(0)
    fj = test_set.chunks[0].index(name)
    props = b["proposals"][fj]
    gt = torch.tensor(fr.boxes[people], dtype=torch.float32)
    with torch.no_grad():
        maps = model.primitive_memory(model.preprocess_image(b))[fj:fj + 1].expand(len(people), -1, -1, -1)
        q = torch.randn(len(people), maps.shape[1])
        idx = torch.zeros(len(people), dtype=torch.long)
        sim = model.similarity_maps(maps[:1], idx, torch.randn(len(people), model.heads.bottleneck[0].num_features))
        out = model.search(maps, [props], q, idx, tuple(b["images"].shape[-2:]), gt_boxes=gt, similarity=sim)
    traj = out["regions"]
    for i in range(len(people)):
        for t in range(cfg.MODEL.NPSM.STEPS - 1):  # shrinkage steps: the sub-region leaving least of the box out
            subs = cluster_subregions(props, traj[i, t], cfg.MODEL.NPSM.CLUSTERS)
            best = box_outside_fraction(subs, gt[i]).min()
            assert box_outside_fraction(traj[i, t + 1][None], gt[i])[0] == pytest.approx(float(best), abs=1e-6)
        cands = region_proposals(props, traj[i, -2])
        assert box_iou(traj[i, -1].numpy(), gt[i].numpy())[0, 0] == pytest.approx(
            box_iou(cands.numpy(), gt[i].numpy()).max(), abs=1e-6)
    assert out["subregion_scores"].shape == out["subregion_outside"].shape
    assert torch.isfinite(out["subregion_scores"]).any(1).all()


def test_attention_mass_outside_the_box_by_hand():
    from fastreid_ext.modeling.layers.npsm import cell_coverage

    # region 0..8 x 0..4 in 2 x 4 cells of 2 x 2 pixels; the box covers column 1 fully, half of column 2
    cov = cell_coverage(torch.tensor([[0.0, 0.0, 8.0, 4.0]]), torch.tensor([[2.0, 0.0, 5.0, 4.0]]), 2, 4)[0]
    torch.testing.assert_close(cov, torch.tensor([[0.0, 1.0, 0.5, 0.0], [0.0, 1.0, 0.5, 0.0]]))


def test_soft_iou_is_the_iou_when_the_attention_covers_the_person_evenly():
    from fastreid_ext.data.search.common import box_iou
    from fastreid_ext.modeling.layers.npsm import soft_iou

    region = torch.tensor([0.0, 0.0, 16.0, 8.0])  # 8 x 8 cells of 2 x 1 pixels
    att = torch.zeros(8, 8)
    att[2:6, 1:3] = 1 / 8  # the person: x 2..6, y 2..6
    boxes = torch.tensor([[2.0, 2.0, 6.0, 6.0], [0.0, 0.0, 16.0, 8.0], [3.0, 2.0, 5.0, 6.0], [2.0, 2.0, 10.0, 7.0]])
    want = box_iou(boxes.numpy(), np.array([2.0, 2.0, 6.0, 6.0]))[:, 0]
    torch.testing.assert_close(soft_iou(att, region, boxes), torch.tensor(want, dtype=torch.float32))


def test_mass_score_keeps_the_person_whole_where_the_mean_cuts_it(npsm):
    """SUBREGION_SCORE: with the attention spread evenly over the person (what the KL term trains), the
    paper's mean attention prefers a sub-region holding half the person (its cells are all "person") to
    one holding all of it; the mass score keeps the whole person, and of two that keep all of it, the smaller."""
    _, model, _ = npsm
    region = torch.tensor([0.0, 0.0, 16.0, 8.0])  # 8 x 8 cells of 2 x 1 pixels
    att = torch.zeros(8, 8)
    att[2:6, 1:3] = 1 / 8  # the person: x 2..6, y 2..6
    half, around, exact = [2.0, 2.0, 4.0, 6.0], [0.0, 0.0, 8.0, 8.0], [2.0, 2.0, 6.0, 6.0]
    old = model.subregion_score
    try:
        model.subregion_score = "mean"
        assert int(model.subregion_logits(att, region, torch.tensor([half, around])).argmax()) == 0
        model.subregion_score = "mass"
        assert int(model.subregion_logits(att, region, torch.tensor([half, around])).argmax()) == 1
        logits = model.subregion_logits(att, region, torch.tensor([around, exact]))
        assert int(logits.argmax()) == 1
        # (mass - AREA_WEIGHT x area share) / FINAL_TEMPERATURE, by hand
        torch.testing.assert_close(logits, torch.tensor([1 - 0.1 * 64 / 128, 1 - 0.1 * 16 / 128]) / 0.1)
    finally:
        model.subregion_score = old


def test_attention_kl_is_zero_only_when_the_attention_covers_the_box_evenly():
    from fastreid_ext.modeling.layers.npsm import box_attention_kl

    region = torch.tensor([[0.0, 0.0, 16.0, 8.0]] * 3)
    box = torch.tensor([[2.0, 2.0, 6.0, 6.0]] * 3)
    even = torch.zeros(8, 8)
    even[2:6, 1:3] = 1 / 8
    torso = torch.zeros(8, 8)
    torso[2:4, 1:3] = 1 / 4  # all the mass inside the box, on half of it
    att = torch.stack([even, torso, torch.full((8, 8), 1 / 64)])
    kl, valid = box_attention_kl(att, region, box)
    assert valid.all() and float(kl[0]) == pytest.approx(0.0, abs=1e-6)
    assert float(kl[1]) > 0.5 and float(kl[2]) == pytest.approx(float(np.log(8)), rel=1e-5)


def test_box_inside_loss_is_the_expected_outside_fraction_and_pulls_towards_containment():
    from fastreid_ext.modeling.losses import build_losses

    from conftest import make_cfg as mk

    loss = build_losses(mk(None, ["MODEL.LOSSES.BOX_INSIDE.SCALE", "2.0"]), ["BoxInsideLoss"])["BoxInsideLoss"]
    scores = torch.tensor([[1.0, 2.0, float("-inf")], [0.0, 0.0, 0.0]], requires_grad=True)
    outside = torch.tensor([[0.0, 0.5, 1.0], [1.0, 0.0, 0.2]])
    att_out = torch.tensor([0.2, 0.4], requires_grad=True)
    value = loss(subregion_scores=scores, subregion_outside=outside, attention_misfit=att_out)
    p0 = torch.tensor([1.0, 2.0]).softmax(0)
    by_hand = 2.0 * (((p0[1] * 0.5) + (1.0 + 0.0 + 0.2) / 3) / 2 + 0.3)
    assert float(value.detach()) == pytest.approx(float(by_hand), rel=1e-6)
    value.backward()
    assert scores.grad[0, 0] < 0 < scores.grad[0, 1], "raising the containing sub-region's score must lower the loss"
    assert scores.grad[1, 1] < 0 < scores.grad[1, 0]
    torch.testing.assert_close(att_out.grad, torch.tensor([1.0, 1.0]))  # 2 x mean
    assert float(loss(subregion_scores=torch.tensor([[50.0, 0.0]]), subregion_outside=torch.tensor([[0.0, 1.0]]),
                      attention_misfit=torch.zeros(3))) < 1e-6


def test_training_frames_pair_each_person_with_a_crop_from_another_frame_and_flip_moves_the_boxes(scenes_root):
    from PIL import Image

    from fastreid_ext.data.search import read_prw
    from fastreid_ext.data.search.loader import SearchTrainSet, search_collate
    from fastreid_ext.data.search.proposals import compute_proposals

    root = scenes_root / "synthetic_scenes"
    s = read_prw(str(root))
    props = compute_proposals(s, str(root / "proposals"), progress=False)
    crops = {}
    for f in s.train:  # every labelled crop of every frame, to find where a query crop was cut
        img = Image.open(s.frames[f].path).convert("RGB")
        for k, b in enumerate(s.frames[f].boxes):
            x1, y1, x2, y2 = (int(round(v)) for v in b)
            crops[(f, k)] = np.asarray(img.crop((x1, y1, max(x2, x1 + 1), max(y2, y1 + 1))))

    def origin(crop):
        return [key for key, c in crops.items() if c.shape == crop.shape and np.array_equal(c, crop)]

    seen = []

    def record(crop):  # the crop transform: remember the crop the loader cut
        seen.append(np.asarray(crop))
        return torch.zeros(3, 8, 4)

    plain = SearchTrainSet(s, props, record, flip_prob=0.0)
    flipped = SearchTrainSet(s, props, record, flip_prob=1.0)
    assert plain.num_classes == len(s.train_ids())
    torch.manual_seed(0)
    a = plain[0]
    query_crops = list(seen)
    b = flipped[0]
    name = plain.frames[0]
    fr = s.frames[name]
    people = np.nonzero(fr.pids >= 0)[0]
    assert len(a["targets"]) == len(people) and len(a["query_images"]) == len(people)
    for j, k in enumerate(people):
        src = origin(query_crops[j])
        assert src, "the query crop is not a labelled box of a training frame"
        pid = int(fr.pids[k])
        assert all(int(s.frames[f].pids[kk]) == pid for f, kk in src)
        elsewhere = any(f != name for f, _ in plain.where[pid])
        assert not elsewhere or all(f != name for f, _ in src), "the query crop was cut from the searched frame"
    w = a["images"].shape[-1]
    assert torch.equal(b["images"], a["images"].flip(-1))
    torch.testing.assert_close(b["gt_boxes"], torch.stack([w - a["gt_boxes"][:, 2], a["gt_boxes"][:, 1],
                                                           w - a["gt_boxes"][:, 0], a["gt_boxes"][:, 3]], 1))
    torch.testing.assert_close(b["proposals"][:, [1, 3]], a["proposals"][:, [1, 3]])
    torch.testing.assert_close(b["proposals"][:, 0], w - a["proposals"][:, 2])
    batch = search_collate([plain[0], plain[1]])
    n0 = len(plain[0]["targets"])
    assert batch["pairs"][:, 1].tolist() == [0] * n0 + [1] * (len(batch["targets"]) - n0)


def test_one_training_step_trains_every_part(scenes_root):
    from fastreid.modeling import build_model

    from fastreid_ext.data.search.loader import build_search_train_loader

    cfg = _cfg(scenes_root, "SOLVER.IMS_PER_BATCH", "2")
    batch = next(iter(build_search_train_loader(cfg)))
    torch.manual_seed(0)
    model = build_model(cfg).train()
    losses = model(batch)
    assert set(losses) == {"loss_cls", "loss_cls_query", "loss_box_inside"}
    assert all(torch.isfinite(v) for v in losses.values()) and float(losses["loss_box_inside"].detach()) > 0
    losses["loss_box_inside"].backward(retain_graph=True)
    # the box-inside loss trains the search (Conv-LSTM, attention, the early layers through the pooled
    # maps and the query vector) and nothing of the re-id half
    for name in ("lstm.conv_x.weight", "lstm.query.weight", "attention.weight", "backbone.layer1.0.conv1.weight"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name
    assert model.get_parameter("backbone.layer4.0.conv1.weight").grad is None
    model.zero_grad()
    losses["loss_cls"].backward()
    for name in ("backbone.layer4.0.conv1.weight", "backbone.layer1.0.conv1.weight", "heads.weight"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name


def test_evaluator_maps_regions_back_to_the_stored_frames(scenes_root):
    from fastreid_ext.data.search.loader import build_search_test_loader
    from fastreid_ext.evaluation.search_evaluator import SearchEvaluator

    cfg = _cfg(scenes_root, "INPUT.SEARCH.FRAME_SIZE", "[128, 160]")  # resized: x 0.833, y 1.333
    loader, test_set = build_search_test_loader(cfg, "SyntheticScenes")
    s = test_set.s
    ev = SearchEvaluator(cfg, test_set)
    ev.reset()
    for b in loader:
        assert b["images"].shape[-2:] == (128, 160)
        boxes, scores = [], []
        for qi, frame, (_, fj) in zip(b["pair_queries"].tolist(), b["pair_frames"], b["pairs"].tolist()):
            fr = s.frames[frame]
            gt = fr.boxes[fr.pids == s.queries[qi].pid]
            box = gt[0] if len(gt) else fr.boxes[0]
            sx, sy = b["scales"][fj].tolist()
            boxes.append(torch.tensor(box) * torch.tensor([sx, sy, sx, sy]))
            scores.append(1.0 if len(gt) else 0.0)
        ev.process(b, {"boxes": torch.stack(boxes), "scores": torch.tensor(scores)})
    r = ev.evaluate()
    assert r["mAP"] == pytest.approx(100) and r["top-1"] == 100 and r["localisation"] == 100
    ev._rows = ev._rows[1:]
    with pytest.raises(ValueError, match="pairs"):
        ev.evaluate()


def test_random_box_scores_each_pair_with_a_proposal_of_its_frame_and_its_own_query(scenes_root, monkeypatch):
    """random_box_search computes every proposal's feature once per frame and only picks per draw: each
    pair's box must be a proposal of its own frame, its score the cosine of that region's feature (computed
    pair by pair, as NPSM scores its searched region) with the pair's own query, the draws must differ,
    and the result must be their mean."""
    from fastreid.modeling import build_model

    from fastreid_ext.data.search.loader import build_search_test_loader
    from fastreid_ext.evaluation import search_evaluator as se

    cfg = _cfg(scenes_root, "INPUT.SIZE_TEST", "[32, 16]", "MODEL.NPSM.REID_POOL", "[4, 2]")  # less re-id work
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    _, test_set = build_search_test_loader(cfg, "SyntheticScenes")
    seen, results = [], []
    process, evaluate = se.SearchEvaluator.process, se.SearchEvaluator.evaluate
    monkeypatch.setattr(se.SearchEvaluator, "process",
                        lambda self, b, o: (seen.append((id(self), b, o)), process(self, b, o))[1])
    monkeypatch.setattr(se.SearchEvaluator, "evaluate", lambda self: (results.append(evaluate(self)), results[-1])[1])
    with torch.no_grad():
        mean = se.random_box_search(model, test_set, seed=0, draws=2)
        draws = {}
        for ev, b, o in seen:
            draws.setdefault(ev, []).append(o["boxes"])
            for box, (_, fj) in zip(o["boxes"], b["pairs"].tolist()):
                assert (b["proposals"][fj].float() == box).all(1).any()
            if len(draws[ev]) == 1:  # the scores pair by pair, on each draw's first batch
                maps = model.primitive_memory(model.preprocess_image(b))
                _, q_feat, _ = model._queries(b)
                _, want = model.region_scores(maps, b["pairs"][:, 1], o["boxes"], q_feat[b["pairs"][:, 0]])
                assert torch.allclose(o["scores"], want, atol=1e-5)
    a, b = (torch.cat(v) for v in draws.values())
    assert len(draws) == 2 and not torch.equal(a, b)
    assert len(results) == 2 and mean["mAP"] == pytest.approx((results[0]["mAP"] + results[1]["mAP"]) / 2)
    with pytest.raises(ValueError, match="draws"):
        se.random_box_search(model, test_set, draws=0)


def test_step_retention_counts_where_the_person_is_lost(scenes_root):
    """search_step_retention (tools/search_steps.py) on a scripted search over resized frames: step 1 keeps
    the whole frame, step 2 the person's box grown by 5 %, step 3 its left half (half the person outside),
    the final region its box again; so kept = 100 / 100 / 0 / 100 % and localised 100 %."""
    from fastreid_ext.data.search.loader import build_search_test_loader
    from fastreid_ext.evaluation.search_evaluator import search_step_retention

    cfg = _cfg(scenes_root, "INPUT.SEARCH.FRAME_SIZE", "[128, 160]")
    _, test_set = build_search_test_loader(cfg, "SyntheticScenes")
    s = test_set.s

    class Scripted:
        shown = 0  # (query, frame showing the person) pairs seen

        def eval(self):
            return self

        def inference(self, b):
            h, w = b["images"].shape[-2:]
            traj = []
            for qi, frame, (_, fj) in zip(b["pair_queries"].tolist(), b["pair_frames"], b["pairs"].tolist()):
                fr = s.frames[frame]
                gt = fr.boxes[fr.pids == s.queries[qi].pid]
                sx, sy = b["scales"][fj].tolist()
                Scripted.shown += int(len(gt) > 0)
                g = torch.tensor(gt[0] if len(gt) else fr.boxes[0], dtype=torch.float32) * torch.tensor([sx, sy, sx, sy])
                cx, cy, bw, bh = (g[0] + g[2]) / 2, (g[1] + g[3]) / 2, g[2] - g[0], g[3] - g[1]
                grown = torch.stack([cx - 0.525 * bw, cy - 0.525 * bh, cx + 0.525 * bw, cy + 0.525 * bh])
                half = torch.stack([g[0], g[1], cx, g[3]])
                traj.append(torch.stack([torch.tensor([0.0, 0.0, w, h]), torch.tensor([0.0, 0.0, w, h]), grown, half, g]))
            return {"trajectory": torch.stack(traj)}

    r = search_step_retention(Scripted(), test_set)
    assert r["pairs"] == Scripted.shown > 0
    assert r["kept"] == pytest.approx([100.0, 100.0, 0.0, 100.0]) and r["localised"] == pytest.approx(100.0)


def _scripted_search_rows(b, s):
    """Deterministic boxes and scores for a test batch: the person's box for two pairs in three, another
    box otherwise; scores from the pair's names (a non-trivial ranking, so the metrics depend on every row)."""
    boxes, scores = [], []
    for qi, frame, (_, fj) in zip(b["pair_queries"].tolist(), b["pair_frames"], b["pairs"].tolist()):
        fr = s.frames[frame]
        gt = fr.boxes[fr.pids == s.queries[qi].pid]
        key = qi * 7919 + sum(map(ord, frame))
        box = gt[0] if len(gt) and key % 3 else fr.boxes[-1]
        sx, sy = b["scales"][fj].tolist()
        boxes.append(torch.tensor(box, dtype=torch.float32) * torch.tensor([sx, sy, sx, sy]))
        scores.append((key % 101) / 101)
    return {"boxes": torch.stack(boxes), "scores": torch.tensor(scores)}


def _search_eval_body(root):
    from fastreid_ext.data.search.loader import build_search_test_loader
    from fastreid_ext.evaluation.search_evaluator import SearchEvaluator

    cfg = _cfg(root)
    loader, test_set = build_search_test_loader(cfg, "SyntheticScenes")
    ev = SearchEvaluator(cfg, test_set)
    ev.reset()
    seen = 0
    for b in loader:
        ev.process(b, _scripted_search_rows(b, test_set.s))
        seen += len(b["pairs"])
    return {"results": ev.evaluate(), "pairs": seen}


def _search_eval_worker(rank, world, init_method, root, out_dir):
    """One process of a gloo group: evaluates its share of the test batches (FastReID's InferenceSampler)."""
    from conftest import gloo_process

    gloo_process(rank, world, init_method, out_dir, body=lambda: _search_eval_body(root))


def test_two_processes_gather_the_search_rows_to_rank0(scenes_root, tmp_path):
    """2 CPU processes (gloo), each evaluating its half of the gallery batches: rank 0 reports exactly the
    single-process metrics (the evaluator refuses a missing pair, so half the rows could not pass), rank 1 {}."""
    from conftest import run_gloo_workers
    from fastreid_ext.data.search.loader import build_search_test_loader
    from fastreid_ext.evaluation.search_evaluator import SearchEvaluator

    cfg = _cfg(scenes_root)
    loader, test_set = build_search_test_loader(cfg, "SyntheticScenes")
    ev = SearchEvaluator(cfg, test_set)
    ev.reset()
    for b in loader:
        ev.process(b, _scripted_search_rows(b, test_set.s))
    single = ev.evaluate()
    assert 0 < single["mAP"] < 100 and 0 < single["localisation"] < 100
    outs = run_gloo_workers(_search_eval_worker, (str(scenes_root),), tmp_path, timeout=120)
    assert outs[1]["results"] == {} and 0 < outs[1]["pairs"] < len(test_set)
    assert outs[0]["pairs"] + outs[1]["pairs"] == len(test_set)
    assert outs[0]["results"].keys() == single.keys()
    for k, v in single.items():
        assert outs[0]["results"][k] == pytest.approx(v), k


def test_person_search_misuse_is_a_clear_error(scenes_root):
    from fastreid_ext.data.search.loader import build_search_test_loader, build_search_train_loader

    with pytest.raises(ValueError, match="crop re-id model: use NPSM"):
        build_search_train_loader(_cfg(scenes_root, "MODEL.META_ARCHITECTURE", "Baseline"))
    with pytest.raises(ValueError, match="TEST.FLIP.ENABLED"):
        build_search_test_loader(_cfg(scenes_root, "TEST.FLIP.ENABLED", "True"), "SyntheticScenes")
    with pytest.raises(FileNotFoundError, match="make_scenes.py"):
        build_search_test_loader(_cfg(scenes_root.parent), "SyntheticScenes")
