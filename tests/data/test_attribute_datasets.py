"""Market1501Attr / DukeMTMCAttr against the real attribute files and the real mini Market."""

import shutil

import numpy as np
import pytest
import torch

from conftest import ATTRIBUTES, MINI_MARKET, make_cfg

MARKET_MAT = ATTRIBUTES / "market_attribute.mat"
DUKE_MAT = ATTRIBUTES / "duke_attribute.mat"


def _need(*paths):
    for p in paths:
        if not p.exists():
            pytest.skip(f"{p} not found")


def _market_attr(root=MINI_MARKET, attribute_file=MARKET_MAT, **kwargs):
    from fastreid.data.datasets import DATASET_REGISTRY

    af = str(attribute_file) if attribute_file else None
    return DATASET_REGISTRY.get("Market1501Attr")(root=str(root), attribute_file=af, **kwargs)


def _raw_pid(pid):
    return int(str(pid).rsplit("_", 1)[-1])


def test_mini_market_every_image_has_identity_level_attributes():
    _need(MARKET_MAT, MINI_MARKET / "bounding_box_train")
    ds = _market_attr()
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (32, 32, 32)
    assert ds.attributes.names and len(ds.attributes.names) == 27
    for split, items in (("train", ds.train), ("test", ds.query + ds.gallery)):
        by_id = {}
        for path, pid, camid, extras in items:
            a = extras["attributes"]
            assert a.shape == (27,) and a.dtype == np.int64
            raw = _raw_pid(pid)
            if raw == 0:  # distractor: no attributes
                assert (a == -1).all()
                continue
            assert (a >= 0).all(), path  # every Market identity is fully labelled
            np.testing.assert_array_equal(a, ds.attributes.encoded(split, raw))
            by_id.setdefault(pid, []).append(a)
        assert by_id
        for pid, rows in by_id.items():  # identity-level: identical across an id's images
            assert all(np.array_equal(r, rows[0]) for r in rows), pid
    # FastReID's own train pid / camid prefixing is kept
    assert all(str(pid).startswith("market1501_") and str(cam).startswith("market1501_")
               for _, pid, cam, _ in ds.train)
    assert all(isinstance(pid, int) for _, pid, _, _ in ds.query)
    # age is 4-way (0..3), the rest binary
    age = ds.attributes.names.index("age")
    allv = np.stack([it[3]["attributes"] for it in ds.train])
    assert allv[:, age].max() <= 3 and np.delete(allv, age, axis=1).max() <= 1


def test_mini_market_through_config_and_loader(tmp_path):
    _need(MARKET_MAT, MINI_MARKET / "bounding_box_train")
    from fastreid_ext.data import attribute_fields, build_train_loader

    cfg = make_cfg("configs/MiniMarket/apr_R18.yml", [
        "DATASETS.ROOT", str(MINI_MARKET), "DATASETS.ATTRIBUTE_FILE", str(MARKET_MAT),
        "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "8"])
    assert len(attribute_fields(cfg)) == 27
    batch = next(iter(build_train_loader(cfg)))
    assert batch["attributes"].shape == (8, 27) and batch["attributes"].dtype == torch.long
    assert (batch["attributes"] >= 0).all()


def test_market_table_counts():
    _need(MARKET_MAT, DUKE_MAT, MINI_MARKET / "bounding_box_train")
    ds = _market_attr()
    t = ds.attributes
    assert (len(t.values["train"]), len(t.values["test"]), len(t.names)) == (751, 750, 27)


def _fake_duke(tmp_path, train_ids, test_ids):
    """A DukeMTMC-reID folder with one (real Market) crop per id, named the Duke way."""
    src = next((MINI_MARKET / "bounding_box_train").glob("*.jpg"))
    root = tmp_path / "duke_root"
    for sub, ids in (("bounding_box_train", train_ids), ("query", test_ids), ("bounding_box_test", test_ids)):
        d = root / "DukeMTMC-reID" / sub
        d.mkdir(parents=True)
        for i, pid in enumerate(ids):
            shutil.copy(src, d / f"{pid:04d}_c{1 + (i + (sub == 'query')) % 8}_f{1000 + i:07d}.jpg")
    return root


def test_duke_attr_reads_real_duke_file(tmp_path):
    _need(DUKE_MAT, MINI_MARKET / "bounding_box_train")
    from fastreid.data.datasets import DATASET_REGISTRY

    from fastreid_ext.data.attributes import load_attribute_mat

    table = load_attribute_mat(str(DUKE_MAT))
    assert (len(table.values["train"]), len(table.values["test"]), len(table.names)) == (702, 1110, 23)
    top = table.names.index("top")
    unlabelled = sorted(p for p, v in table.values["train"].items() if v[top] == 0)
    assert len(unlabelled) == 2  # Duke `top` is 0 for two train ids
    train_ids = unlabelled + sorted(table.values["train"])[:2]
    test_ids = sorted(table.values["test"])[:3]
    root = _fake_duke(tmp_path, train_ids, test_ids)
    # default location: <root>/DukeMTMC-reID/duke_attribute.mat
    shutil.copy(DUKE_MAT, root / "DukeMTMC-reID" / "duke_attribute.mat")
    ds = DATASET_REGISTRY.get("DukeMTMCAttr")(root=str(root))
    assert len(ds.attributes.names) == 23
    assert len(ds.train) == 4 and len(ds.query) == 3 and len(ds.gallery) == 3
    for path, pid, camid, extras in ds.train:
        raw = _raw_pid(pid)
        assert str(pid).startswith("dukemtmc_")
        np.testing.assert_array_equal(extras["attributes"], table.encoded("train", raw))
        assert (extras["attributes"][top] == -1) == (raw in unlabelled)
    for path, pid, camid, extras in ds.query + ds.gallery:
        np.testing.assert_array_equal(extras["attributes"], table.encoded("test", pid))


def test_default_location_and_missing_file(tmp_path):
    _need(MARKET_MAT, MINI_MARKET / "bounding_box_train")
    root = tmp_path / "market"
    root.mkdir()
    for sub in ("bounding_box_train", "query", "bounding_box_test"):
        (root / sub).symlink_to(MINI_MARKET / sub)
    with pytest.raises(FileNotFoundError) as e:
        _market_attr(root=root, attribute_file=None)
    msg = str(e.value)
    assert str(root / "market_attribute.mat") in msg and "DATASETS.ATTRIBUTE_FILE" in msg
    with pytest.raises(FileNotFoundError, match="DATASETS.ATTRIBUTE_FILE"):
        _market_attr(root=root, attribute_file=tmp_path / "nowhere.mat")
    (root / "market_attribute.mat").symlink_to(MARKET_MAT)
    ds = _market_attr(root=root, attribute_file=None)
    assert len(ds.train) == 32 and all(len(it) == 4 for it in ds.train)
    # the wrong dataset's file is refused
    with pytest.raises(ValueError, match="duke_attribute"):
        _market_attr(root=root, attribute_file=DUKE_MAT)


def _drop_test_ids(src, dst, drop):
    """Write ``src`` (official layout) to ``dst`` without the test-split identities ``drop``."""
    import scipy.io as sio

    mat = sio.loadmat(str(src))
    top = mat["market_attribute"]
    test = top["test"][0, 0]
    ids = [int(str(np.asarray(x).ravel()[0])) for x in test["image_index"][0, 0].ravel()]
    keep = [i for i, p in enumerate(ids) if p not in drop]
    new_test = np.empty((1, 1), dtype=test.dtype)
    for name in test.dtype.names:
        new_test[0, 0][name] = test[name][0, 0][:, keep]
    new_top = np.empty((1, 1), dtype=top.dtype)
    new_top[0, 0]["train"] = top["train"][0, 0]
    new_top[0, 0]["test"] = new_test
    sio.savemat(str(dst), {"market_attribute": new_top})


def test_identities_missing_from_the_file_are_named(tmp_path):
    _need(MARKET_MAT, MINI_MARKET / "bounding_box_train")
    query_ids = sorted({int(p.name[:4]) for p in (MINI_MARKET / "query").glob("*.jpg")} - {0})
    drop = query_ids[:2]
    crafted = tmp_path / "market_attribute.mat"
    _drop_test_ids(MARKET_MAT, crafted, set(drop))
    from fastreid_ext.data.attributes import load_attribute_mat

    assert len(load_attribute_mat(str(crafted)).values["test"]) == 748
    with pytest.raises(ValueError) as e:
        _market_attr(attribute_file=crafted)
    msg = str(e.value)
    assert "2 identities" in msg and all(f"{p:04d}" in msg for p in drop), msg
    assert "'test'" in msg


def test_combineall_keeps_attributes():
    _need(MARKET_MAT, MINI_MARKET / "bounding_box_train")
    ds = _market_attr(combineall=True)
    assert len(ds.train) == 32 + 32 + sum(1 for it in ds.gallery if it[1] != 0)
    assert all(len(it) == 4 and it[3]["attributes"].shape == (27,) for it in ds.train)
    assert len({it[1] for it in ds.train}) == 16 + len({it[1] for it in ds.query + ds.gallery} - {0})


def test_attribute_fields_resolved_once_written_to_config_and_order_checked(synthetic_root, tmp_path):
    """MODEL.ATTRIBUTES.FIELDS is derived from the training set's attribute file once (the trainer's
    auto_scale_hyperparams), written to the run's config.yaml; a list in another order is an error
    naming the file, never a silent relabelling."""
    import yaml

    from fastreid_ext.data import build_train_set, resolve_attribute_fields
    from fastreid_ext.data.synthetic import MARKET_ATTRIBUTES
    from fastreid_ext.engine import ExtTrainer

    opts = ["DATASETS.ROOT", str(synthetic_root), "OUTPUT_DIR", str(tmp_path), "DATALOADER.NUM_WORKERS", "0"]
    cfg = make_cfg("configs/Synthetic/apr_R18.yml", opts)
    assert list(cfg.MODEL.ATTRIBUTES.FIELDS) == []
    resolved = resolve_attribute_fields(cfg)
    assert list(resolved.MODEL.ATTRIBUTES.FIELDS) == list(MARKET_ATTRIBUTES)
    assert list(cfg.MODEL.ATTRIBUTES.FIELDS) == []  # a resolved clone, the input untouched
    cfg.freeze()
    scaled = ExtTrainer.auto_scale_hyperparams(cfg, 30)
    written = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert written["MODEL"]["ATTRIBUTES"]["FIELDS"] == list(MARKET_ATTRIBUTES)
    assert scaled.MODEL.HEADS.NUM_CLASSES == 30 and scaled.is_frozen()

    swapped = list(MARKET_ATTRIBUTES)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    bad = make_cfg("configs/Synthetic/apr_R18.yml", opts + ["MODEL.ATTRIBUTES.FIELDS", str(swapped)])
    with pytest.raises(ValueError, match=r"market_attribute\.mat.*another order"):
        build_train_set(bad)
