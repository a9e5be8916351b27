"""Keypoints for any registered dataset (DATASETS.KEYPOINTS_DIR, fastreid_ext.data.dataset_keypoints):
FastReID's own Market1501 reader on the real mini Market, the default location, errors, an attribute
dataset keeping its attributes, MSMT17-like sub-folder layouts."""

import os
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_cfg

SPLITS = ("bounding_box_train", "query", "bounding_box_test")


def _kps(name: str) -> np.ndarray:
    """Deterministic (17, 3) keypoints inside a 64x128 crop, all visibilities, per image name."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    k = np.zeros((17, 3), np.float32)
    k[:, 0] = rng.uniform(0, 63, 17).round(2)
    k[:, 1] = rng.uniform(0, 127, 17).round(2)
    k[:, 2] = rng.integers(0, 3, 17)
    k[k[:, 2] == 0, :2] = 0
    k[5, 2] = 2  # at least one visible joint per image
    return k


def _write(kp_dir: Path, data_dir: Path, skip=()):
    from fastreid_ext.data.coco_keypoints import keypoint_file_name, write_coco_keypoints

    for split in SPLITS:
        names = sorted(n for n in os.listdir(data_dir / split) if n.endswith(".jpg") and n not in skip)
        write_coco_keypoints(str(kp_dir / keypoint_file_name(split)), [(n, _kps(n)) for n in names], split,
                             width=64, height=128)


def _market_cfg(root, *opts):
    return make_cfg("configs/MiniMarket/bagtricks_R18.yml", [
        "DATASETS.ROOT", str(root), "INPUT.SIZE_TEST", "[256, 128]", "DATALOADER.NUM_WORKERS", "0",
        "TEST.IMS_PER_BATCH", "16", *opts])


def _expected_test_time(kps, scale=2.0):
    """KeypointTransform at test time: resize 64x128 -> 128x256 (pixel-centre convention)."""
    out = kps.copy()
    vis = out[:, 2] > 0
    out[vis, :2] = (out[vis, :2] + 0.5) * scale - 0.5
    return out


def test_fastreid_market1501_gets_keypoints_from_keypoints_dir(mini_market_root, tmp_path):
    from fastreid_ext.data import build_test_loader
    from fastreid_ext.data.keypoints import render_heatmaps

    _write(tmp_path / "kp", mini_market_root)
    cfg = _market_cfg(mini_market_root, "INPUT.EXTRA_FIELDS", '["keypoints", "heatmaps"]',
                      "DATASETS.KEYPOINTS_DIR", str(tmp_path / "kp"))
    loader, num_query = build_test_loader(cfg, "Market1501")
    items = loader.dataset.img_items
    assert num_query == 32 and all(len(it) == 4 for it in items)  # FastReID's 3-tuples gained extras
    seen = 0
    for batch in loader:
        assert batch["images"].shape[-2:] == (256, 128)
        assert batch["heatmaps"].shape[1:] == (17, 128, 64)
        for path, kp, hm in zip(batch["img_paths"], batch["keypoints"], batch["heatmaps"]):
            want = _expected_test_time(_kps(os.path.basename(path)))
            torch.testing.assert_close(kp, torch.from_numpy(want), rtol=0, atol=1e-5)
            torch.testing.assert_close(hm, render_heatmaps(want, (256, 128), (128, 64), cfg.INPUT.HEATMAP.SIGMA))
            seen += 1
    assert seen == len(items) == 64


def test_train_set_of_fastreid_market1501_gets_keypoints(mini_market_root, tmp_path):
    from fastreid_ext.data import build_train_set

    _write(tmp_path / "kp", mini_market_root)
    cfg = _market_cfg(mini_market_root, "INPUT.EXTRA_FIELDS", '["keypoints"]',
                      "DATASETS.KEYPOINTS_DIR", str(tmp_path / "kp"))
    ds = build_train_set(cfg)
    assert len(ds) == 32
    for path, _, _, extras in ds.img_items:
        np.testing.assert_array_equal(extras["keypoints"], _kps(os.path.basename(path)))


def _linked_market(tmp_path, mini_market_root) -> Path:
    """A writable dataset folder whose split folders are links to the real mini Market (no copy)."""
    root = tmp_path / "mm"
    root.mkdir()
    for split in SPLITS:
        (root / split).symlink_to(mini_market_root / split, target_is_directory=True)
    return root


def test_default_location_is_dataset_folder_keypoints(mini_market_root, tmp_path):
    from fastreid_ext.data import build_test_set

    root = _linked_market(tmp_path, mini_market_root)
    _write(root / "keypoints", root)
    cfg = _market_cfg(root, "INPUT.EXTRA_FIELDS", '["keypoints"]')
    assert cfg.DATASETS.KEYPOINTS_DIR == ""
    ds, _ = build_test_set(cfg, "Market1501")
    path, _, _, extras = ds.img_items[0]
    np.testing.assert_array_equal(extras["keypoints"], _kps(os.path.basename(path)))
    out = ds[0]["keypoints"].numpy()
    np.testing.assert_allclose(out, _expected_test_time(_kps(os.path.basename(path))), atol=1e-5)


def test_missing_keypoint_file_names_it(mini_market_root, tmp_path):
    from fastreid_ext.data import build_test_set

    (tmp_path / "empty").mkdir()
    cfg = _market_cfg(mini_market_root, "INPUT.EXTRA_FIELDS", '["heatmaps"]',
                      "DATASETS.KEYPOINTS_DIR", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match=r"keypoint file not found: .*empty/person_keypoints_query\.json"
                                                r".*DATASETS.KEYPOINTS_DIR") as e:
        build_test_set(cfg, "Market1501")
    # and the command that writes it
    assert (f"python tools/make_keypoints.py --dataset Market1501 --root {mini_market_root} --model blazepose "
            f"--out {tmp_path / 'empty'}") in str(e.value)
    cfg = _market_cfg(_linked_market(tmp_path, mini_market_root), "INPUT.EXTRA_FIELDS", '["keypoints"]')
    with pytest.raises(FileNotFoundError, match=r"mm/keypoints/person_keypoints_query\.json.*default location"):
        build_test_set(cfg, "Market1501")


def test_images_without_keypoints_are_counted_and_named(mini_market_root, tmp_path):
    from fastreid_ext.data import build_test_set

    skip = sorted(os.listdir(mini_market_root / "bounding_box_test"))[:3]
    _write(tmp_path / "kp", mini_market_root, skip=skip)
    cfg = _market_cfg(mini_market_root, "INPUT.EXTRA_FIELDS", '["keypoints"]',
                      "DATASETS.KEYPOINTS_DIR", str(tmp_path / "kp"))
    with pytest.raises(ValueError) as e:
        build_test_set(cfg, "Market1501")
    msg = str(e.value)
    assert "Market1501: 3 of 32 images of split folder 'bounding_box_test'" in msg
    assert str(tmp_path / "kp" / "person_keypoints_bounding_box_test.json") in msg
    assert all(name in msg for name in skip)


def test_no_keypoint_field_reads_no_keypoint_file(mini_market_root, tmp_path, monkeypatch):
    import fastreid_ext.data.dataset_keypoints as dk
    from fastreid_ext.data import build_test_set

    def boom(*a, **k):
        raise AssertionError("keypoint file read although no keypoint field was asked for")

    monkeypatch.setattr(dk, "read_coco_keypoints", boom)
    cfg = _market_cfg(mini_market_root, "DATASETS.KEYPOINTS_DIR", str(tmp_path / "does-not-exist"))
    ds, _ = build_test_set(cfg, "Market1501")
    assert all(len(it) == 3 for it in ds.img_items)


def test_attribute_dataset_keeps_attributes_and_gains_keypoints(synthetic_root, tmp_path):
    from fastreid.data.datasets import DATASET_REGISTRY

    from fastreid_ext.data import build_train_set
    from fastreid_ext.data.coco_keypoints import keypoint_file_name, read_coco_keypoints, write_coco_keypoints

    data_dir = synthetic_root / "synthetic_market"
    # a keypoint folder of our own: the generated keypoints moved by +1 px (to tell them apart)
    shifted = {}
    for split in SPLITS:
        kf = read_coco_keypoints(str(data_dir / "keypoints" / keypoint_file_name(split)))
        recs = []
        for name, k in kf.keypoints.items():
            k = k.copy()
            k[k[:, 2] > 0, 0] += 1
            shifted[name] = k
            recs.append((name, k))
        write_coco_keypoints(str(tmp_path / "kp" / keypoint_file_name(split)), recs, split)
    cfg = make_cfg("configs/Synthetic/bagtricks_R18.yml", [
        "DATASETS.ROOT", str(synthetic_root), "INPUT.EXTRA_FIELDS", '["attributes", "keypoints"]',
        "DATASETS.KEYPOINTS_DIR", str(tmp_path / "kp"), "DATALOADER.NUM_WORKERS", "0"])
    ds = build_train_set(cfg)
    plain = DATASET_REGISTRY.get("SyntheticMarket")(root=str(synthetic_root))
    attrs = {p: e["attributes"] for p, _, _, e in plain.train}
    assert len(ds.img_items) == len(attrs) > 0
    for path, _, _, extras in ds.img_items:
        assert set(extras) == {"attributes", "keypoints"}
        np.testing.assert_array_equal(extras["attributes"], attrs[path])
        np.testing.assert_array_equal(extras["keypoints"], shifted[os.path.basename(path)])
    sample = ds[0]
    assert sample["attributes"].shape == (27,) and sample["keypoints"].shape == (17, 3)
    assert "keypoints" not in plain.train[0][3]  # the dataset itself is not changed


def test_subfolder_layout_matches_relative_paths_or_bare_names(tmp_path):
    """MSMT17-like layout: <main>/train/<pid>/<img>, <main>/test/<pid>/<img> (query + gallery share test)."""
    from types import SimpleNamespace

    from fastreid_ext.data.coco_keypoints import write_coco_keypoints
    from fastreid_ext.data.dataset_keypoints import attach_keypoints, split_folders

    main = tmp_path / "MSMT17_V2"
    imgs = {"train": ["0001/0001_a.jpg", "0002/0002_b.jpg"], "test": ["0003/0003_c.jpg", "0004/0004_d.jpg"]}
    for split, names in imgs.items():
        for n in names:
            (main / split / n).parent.mkdir(parents=True, exist_ok=True)
            (main / split / n).write_bytes(b"")
    ds = SimpleNamespace(dataset_dir=str(tmp_path), train_dir=str(main / "train"), test_dir=str(main / "test"))
    assert split_folders(ds) == sorted([str(main / "test"), str(main / "train")], key=lambda p: (-len(p), p))
    items = [(str(main / s / n), n[:4], 0) for s in imgs for n in imgs[s]]
    # the pose tool's layout: <dataset folder>/keypoints/, file_name relative to the split folder
    for split, names in imgs.items():
        write_coco_keypoints(str(main / "keypoints" / f"person_keypoints_{split}.json"),
                             [(n, _kps(n)) for n in names], split)
    out = attach_keypoints(items, ds, name="MSMT17")
    for (path, pid, cam, extras), (p0, *_) in zip(out, items):
        assert path == p0
        np.testing.assert_array_equal(extras["keypoints"], _kps(os.path.relpath(path, Path(path).parents[1])))
    # a file holding bare names is matched by base name
    write_coco_keypoints(str(tmp_path / "flat" / "person_keypoints_test.json"),
                         [(n.split("/")[1], _kps(n)) for n in imgs["test"]], "test")
    write_coco_keypoints(str(tmp_path / "flat" / "person_keypoints_train.json"),
                         [(n.split("/")[1], _kps(n)) for n in imgs["train"]], "train")
    out = attach_keypoints(items, ds, str(tmp_path / "flat"))
    assert all(np.array_equal(o[3]["keypoints"], _kps(os.path.relpath(o[0], Path(o[0]).parents[1]))) for o in out)
    # ... unless two images share a base name
    (main / "test" / "0005").mkdir()
    (main / "test" / "0005" / "0003_c.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="'0003_c.jpg' names two images"):
        attach_keypoints(items + [(str(main / "test" / "0005" / "0003_c.jpg"), "0005", 0)], ds,
                         str(tmp_path / "flat"))
