"""Synthetic set through FastReID's own readers, extra fields in the batch, real attribute files."""

import numpy as np
import pytest
import torch

from conftest import ATTRIBUTES, make_cfg


def test_synthetic_market_round_trips_through_fastreid_market1501_reader(synthetic_root):
    from fastreid.data.datasets import DATASET_REGISTRY

    stock = DATASET_REGISTRY.get("Market1501")(root=str(synthetic_root / "synthetic_market"))
    ours = DATASET_REGISTRY.get("SyntheticMarket")(root=str(synthetic_root))
    assert len(stock.train) == len(ours.train) > 0
    assert len(stock.query) == len(ours.query) > 0
    assert len(stock.gallery) == len(ours.gallery) > 0
    assert [t[:3] for t in sorted(stock.query)] == [t[:3] for t in sorted(ours.query)]
    assert {p for _, p, _ in stock.train}.isdisjoint({p for _, p, _ in stock.query})
    assert any(p == 0 for _, p, _ in stock.gallery), "distractors (pid 0000) are in the gallery"
    assert len({c for _, _, c in stock.query}) == 6


def test_synthetic_duke_round_trips_through_fastreid_duke_reader(synthetic_duke_root):
    from fastreid.data.datasets import DATASET_REGISTRY

    import shutil
    duke_dir = synthetic_duke_root / "DukeMTMC-reID"
    if not duke_dir.exists():
        shutil.copytree(synthetic_duke_root / "synthetic_duke", duke_dir)
    stock = DATASET_REGISTRY.get("DukeMTMC")(root=str(synthetic_duke_root))
    ours = DATASET_REGISTRY.get("SyntheticDuke")(root=str(synthetic_duke_root))
    assert len(stock.train) == len(ours.train) > 0
    assert len(stock.gallery) == len(ours.gallery) > 0
    assert max(it[2] for it in ours.gallery) > 5, "Duke style has 8 cameras"


def test_items_carry_attributes_and_keypoints(synthetic_root):
    from fastreid.data.datasets import DATASET_REGISTRY

    from fastreid_ext.data.dataset_keypoints import attach_keypoints

    ds = DATASET_REGISTRY.get("SyntheticMarket")(root=str(synthetic_root))
    assert "keypoints" not in ds.train[0][3]  # read only when asked for (the loaders attach them)
    path, pid, camid, extras = attach_keypoints(ds.train, ds)[0]
    assert extras["attributes"].shape == (27,) and extras["attributes"].dtype == np.int64
    assert extras["keypoints"].shape == (17, 3)
    assert set(np.unique(extras["attributes"])) <= {0, 1, 2, 3}
    # identity-level labels: the same for every image of an identity
    same = [it[3]["attributes"] for it in ds.train if it[1] == pid]
    assert len(same) > 1 and all(np.array_equal(a, same[0]) for a in same)


def test_extra_fields_reach_the_batch_through_fastreid_loader(synthetic_root):
    from fastreid_ext.data import build_train_loader

    cfg = make_cfg("configs/Synthetic/bagtricks_R18.yml", [
        "DATASETS.ROOT", str(synthetic_root), "INPUT.EXTRA_FIELDS", '["attributes", "keypoints", "heatmaps"]',
        "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "16"])
    batch = next(iter(build_train_loader(cfg)))
    assert batch["images"].shape == (16, 3, 128, 64)
    assert batch["attributes"].shape == (16, 27) and batch["attributes"].dtype == torch.long
    assert batch["keypoints"].shape == (16, 17, 3)
    assert batch["heatmaps"].shape == (16, 17, 64, 32)
    assert batch["heatmaps"].max() <= 1.0 and batch["heatmaps"].amax(dim=(2, 3)).max() > 0.5


def _one_image(synthetic_root):
    from fastreid.data.datasets import DATASET_REGISTRY

    from fastreid_ext.data.common import read_image
    from fastreid_ext.data.dataset_keypoints import attach_keypoints

    ds = DATASET_REGISTRY.get("SyntheticMarket")(root=str(synthetic_root))
    path, _, _, extras = next(it for it in attach_keypoints(ds.train, ds) if (it[3]["keypoints"][5:7, 2] > 0).all())
    return read_image(path), extras["keypoints"]


def test_flip_keeps_keypoints_left_right_consistent(synthetic_root):
    from fastreid_ext.data.keypoints import KeypointTransform

    img, kp = _one_image(synthetic_root)
    opts = ["INPUT.SIZE_TRAIN", "[128, 64]", "INPUT.PADDING.ENABLED", "False", "INPUT.REA.ENABLED", "False"]
    plain = KeypointTransform(make_cfg(opts=opts + ["INPUT.FLIP.ENABLED", "False"]), is_train=True)
    flip = KeypointTransform(make_cfg(opts=opts + ["INPUT.FLIP.ENABLED", "True", "INPUT.FLIP.PROB", "1.0"]),
                             is_train=True)
    x0, k0 = plain(img, kp)[:2]
    x1, k1 = flip(img, kp)[:2]
    assert torch.allclose(x1, x0.flip(dims=[2]))
    # the person's left shoulder after the flip is where the right shoulder was, mirrored
    assert k1[5, 0] == pytest.approx(64 - 1 - k0[6, 0]) and k1[5, 1] == pytest.approx(k0[6, 1])
    assert k1[6, 0] == pytest.approx(64 - 1 - k0[5, 0])


def test_pad_crop_moves_keypoints_with_pixels(synthetic_root):
    import random

    from fastreid_ext.data.keypoints import KeypointTransform, render_heatmaps

    img, kp = _one_image(synthetic_root)
    cfg = make_cfg(opts=["INPUT.SIZE_TRAIN", "[128, 64]", "INPUT.PADDING.ENABLED", "True",
                         "INPUT.PADDING.SIZE", "10", "INPUT.FLIP.ENABLED", "False", "INPUT.REA.ENABLED", "False"])
    tf = KeypointTransform(cfg, is_train=True)
    plain = KeypointTransform(make_cfg(opts=["INPUT.SIZE_TRAIN", "[128, 64]", "INPUT.REA.ENABLED", "False"]), True)
    x0, k0 = plain(img, kp)[:2]
    random.seed(3)
    x, k = tf(img, kp)[:2]
    dx, dy = float(k[5, 0] - k0[5, 0]), float(k[5, 1] - k0[5, 1])
    ix, iy = int(round(dx)), int(round(dy))
    assert (dx, dy) == (ix, iy) and abs(ix) <= 10 and abs(iy) <= 10  # an integer pad/crop shift
    both = (k[:, 2] > 0) & (k0[:, 2] > 0)
    assert np.allclose(k[both, :2] - k0[both, :2], [dx, dy])
    # the pixels moved by the same shift as the keypoints (compare an interior window)
    assert torch.allclose(x0[:, 30 - iy:90 - iy, 20 - ix:44 - ix], x[:, 30:90, 20:44], atol=1e-4)
    hm = render_heatmaps(k, (128, 64), (64, 32))
    j = 5
    yx = divmod(int(hm[j].argmax()), 32)
    assert abs(yx[0] - (k[j, 1] + 0.5) / 2 + 0.5) <= 1 and abs(yx[1] - (k[j, 0] + 0.5) / 2 + 0.5) <= 1


def test_keypoints_refuse_geometric_augmentations_they_cannot_follow():
    from fastreid_ext.data.keypoints import KeypointTransform

    with pytest.raises(ValueError, match="AFFINE"):
        KeypointTransform(make_cfg(opts=["INPUT.AFFINE.ENABLED", "True"]), is_train=True)


@pytest.fixture(scope="module")
def real_attr():
    if not (ATTRIBUTES / "market_attribute.mat").is_file():
        pytest.skip(f"real attribute files not found in {ATTRIBUTES}")
    return ATTRIBUTES


def test_real_market_attribute_file(real_attr):
    from fastreid_ext.data.attributes import load_attribute_mat

    t = load_attribute_mat(str(real_attr / "market_attribute.mat"))
    assert len(t.values["train"]) == 751 and len(t.values["test"]) == 750
    assert len(t.names) == 27
    assert t.num_classes()[t.names.index("age")] == 4
    # read by name although test stores its fields in another order
    assert t.encoded("train", 2).shape == (27,)


def test_real_duke_attribute_file_marks_unlabelled_as_ignored(real_attr):
    from fastreid_ext.data.attributes import IGNORE, load_attribute_mat

    t = load_attribute_mat(str(real_attr / "duke_attribute.mat"))
    assert len(t.values["train"]) == 702 and len(t.values["test"]) == 1110 and len(t.names) == 23
    top = t.names.index("top")
    unlabelled = [p for p in t.values["train"] if t.encoded("train", p)[top] == IGNORE]
    assert len(unlabelled) == 2


def test_synthetic_attribute_file_has_the_real_layout(synthetic_root, real_attr):
    from fastreid_ext.data.attributes import load_attribute_mat

    ours = load_attribute_mat(str(synthetic_root / "synthetic_market/attribute/market_attribute.mat"))
    real = load_attribute_mat(str(real_attr / "market_attribute.mat"))
    assert ours.struct_name == real.struct_name
    assert set(ours.names) == set(real.names)
    assert ours.num_classes() == [real.num_classes()[real.names.index(n)] for n in ours.names]


def test_attribute_schema_heads_and_targets():
    from fastreid_ext.data.attributes import AttributeSchema
    from fastreid_ext.data.synthetic import MARKET_ATTRIBUTES

    flat = AttributeSchema(MARKET_ATTRIBUTES)
    assert len(flat) == 27 and flat.num_classes[flat.names.index("age")] == 4
    grouped = AttributeSchema(MARKET_ATTRIBUTES, group_colours=True)
    assert sorted(grouped.names) == sorted(["age", "backpack", "bag", "handbag", "clothes", "down", "up",
                                            "hair", "hat", "gender", "upcolor", "downcolor"])
    assert dict(zip(grouped.names, grouped.num_classes))["upcolor"] == 8
    assert dict(zip(grouped.names, grouped.num_classes))["downcolor"] == 9
    row = torch.zeros(3, 27, dtype=torch.long)
    ups = [i for i, f in enumerate(MARKET_ATTRIBUTES) if f.startswith("up") and f != "up"]
    row[0, ups[2]] = 1               # exactly one upper colour -> that class
    row[1, ups[0]] = row[1, ups[1]] = 1  # two colours -> ignored
    row[2, MARKET_ATTRIBUTES.index("age")] = -1  # unlabelled stays ignored
    t = grouped.targets(row)
    up = grouped.names.index("upcolor")
    assert t[0, up] == 2 and t[1, up] == -1 and t[2, up] == -1
    assert t[2, grouped.names.index("age")] == -1
    with pytest.raises(ValueError, match="27 fields"):
        grouped.targets(torch.zeros(2, 5, dtype=torch.long))


def test_attribute_schema_on_real_duke_fields(real_attr):
    from fastreid_ext.data.attributes import AttributeSchema, load_attribute_mat

    t = load_attribute_mat(str(real_attr / "duke_attribute.mat"))
    s = AttributeSchema(t.names, group_colours=True)
    assert dict(zip(s.names, s.num_classes)) == {**{n: 2 for n in ["backpack", "bag", "handbag", "boots", "gender",
                                                                  "hat", "shoes", "top"]},
                                                 "upcolor": 8, "downcolor": 7}


def test_stored_pose_heatmaps_reach_the_batch_moved_like_the_pixels(tmp_path):
    """INPUT.HEATMAP.SOURCE stored: a pose model's own maps (here: Gaussians at the true keypoints, stored
    in an HRNet-like 64x48 frame around the crop) end on the transformed keypoints after pad/crop/flip."""
    import random

    from fastreid_ext.data import build_train_set
    from fastreid_ext.data.coco_keypoints import read_coco_keypoints
    from fastreid_ext.data.keypoints import render_heatmaps
    from fastreid_ext.data.stored_heatmaps import HeatmapWriter
    from fastreid_ext.data.synthetic import generate
    from fastreid_ext.evaluation.keypoints import heatmap_peaks

    root = tmp_path / "data"
    generate(str(root / "synthetic_market"), num_train_ids=2, num_test_ids=2, progress=False)
    kf = read_coco_keypoints(str(root / "synthetic_market/keypoints/person_keypoints_bounding_box_train.json"))
    # heatmap pixel (u, v) -> crop pixel: a 120x160 box (aspect 0.75, padding 1.25) centred on the 64x128 crop
    s, cx, cy = 2.5, -28 + 1.25 - 0.5, -16 + 1.25 - 0.5
    writer = HeatmapWriter(str(root / "synthetic_market/keypoints/heatmaps_bounding_box_train.json"),
                           len(kf.keypoints), (64, 48))
    for name, kp in kf.keypoints.items():
        hk = kp.copy()
        hk[:, 0], hk[:, 1] = (kp[:, 0] - cx) / s, (kp[:, 1] - cy) / s
        writer.add(name, render_heatmaps(hk, (64, 48), (64, 48), sigma=1.0).numpy(), [[s, 0, cx], [0, s, cy]], (128, 64))
    writer.commit()
    opts = ["DATASETS.ROOT", str(root), "DATASETS.NAMES", '("SyntheticMarket",)', "INPUT.SIZE_TRAIN", "[128, 64]",
            "INPUT.EXTRA_FIELDS", '["keypoints", "heatmaps"]', "INPUT.PADDING.ENABLED", "True", "INPUT.PADDING.SIZE", "6",
            "INPUT.FLIP.ENABLED", "True", "INPUT.FLIP.PROB", "0.5", "INPUT.REA.ENABLED", "False"]
    stored = build_train_set(make_cfg(opts=opts + ["INPUT.HEATMAP.SOURCE", "stored"]))
    rendered = build_train_set(make_cfg(opts=opts))
    checked = 0
    for i in range(8):
        random.seed(i)
        sample = stored[i]
        hm, kp = sample["heatmaps"], sample["keypoints"]
        random.seed(i)
        other = rendered[i]
        assert torch.equal(other["keypoints"], kp)  # same augmentation drawn
        # the stored maps are used (narrower than the rendered sigma-2 Gaussians), not re-rendered
        assert hm.sum() < 0.6 * other["heatmaps"].sum()
        assert hm.shape == (17, 64, 32)
        vis = (kp[:, 2] > 0) & (hm.amax(dim=(1, 2)) > 0.3)
        err = (heatmap_peaks(hm[None], (128, 64))[0][vis] - kp[vis, :2]).abs().max()
        assert err <= 2.0, (i, err)  # within one heatmap cell
        checked += int(vis.sum())
    assert checked >= 80
    with pytest.raises(FileNotFoundError, match="heatmaps_query.json.*--save-heatmaps"):
        from fastreid_ext.data import build_test_set
        build_test_set(make_cfg(opts=opts + ["INPUT.HEATMAP.SOURCE", "stored"]), "SyntheticMarket")
