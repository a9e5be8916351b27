"""Bad input: clear errors that say what and where, never a silent wrong result."""

import pytest

from conftest import make_cfg


def test_missing_synthetic_root_says_where_and_how(tmp_path):
    from fastreid_ext.data import load_dataset

    cfg = make_cfg(opts=["DATASETS.ROOT", str(tmp_path / "nowhere")])
    with pytest.raises(FileNotFoundError) as e:
        load_dataset(cfg, "SyntheticMarket")
    msg = str(e.value)
    assert str(tmp_path / "nowhere" / "synthetic_market") in msg and "make_synthetic.py" in msg


def test_missing_stock_dataset_root_names_folder(tmp_path):
    from fastreid_ext.data import load_dataset

    cfg = make_cfg(opts=["DATASETS.ROOT", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_dataset(cfg, "Market1501")


def test_unknown_dataset_name():
    from fastreid_ext.data import load_dataset

    with pytest.raises(KeyError, match="SyntheticMarket"):
        load_dataset(make_cfg(), "NoSuchSet")


def test_unknown_config_key_suggests_the_right_one(tmp_path):
    with pytest.raises(KeyError, match="Did you mean MODEL.BACKBONE.DEPTH"):
        make_cfg(opts=["MODEL.BACKBONE.DEPHT", "18x"])
    bad = tmp_path / "bad.yml"
    bad.write_text("SOLVER:\n  MAX_EPOHC: 3\n")
    with pytest.raises(KeyError, match=f"config file {bad}.*SOLVER.MAX_EPOHC"):
        make_cfg(str(bad))


def test_unknown_loss_name_is_an_error():
    with pytest.raises(ValueError, match="TripletLos"):
        make_cfg(opts=["MODEL.LOSSES.NAME", '("CrossEntropyLoss", "TripletLos")'])


def test_attribute_filter_settings_fail_before_training():
    """Filter settings are used only at the final evaluation: a typo must fail when the config loads."""
    with pytest.raises(ValueError, match="PLAN.*'exact'"):
        make_cfg("configs/Synthetic/apr_R18.yml", ["TEST.ATTR_FILTER.PLAN", "exakt"])
    with pytest.raises(ValueError, match="THRESHOLD is 70"):
        make_cfg("configs/Synthetic/apr_R18.yml", ["TEST.ATTR_FILTER.THRESHOLD", "70."])
    with pytest.raises(ValueError, match="EXTRA_FIELDS"):  # a model without attributes cannot filter
        make_cfg("configs/Synthetic/bagtricks_R18.yml", ["TEST.ATTR_FILTER.ENABLED", "True"])


def test_cuda_device_without_cuda_is_an_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("machine has CUDA")
    with pytest.raises(ValueError, match="MODEL.DEVICE cpu"):
        make_cfg(opts=["MODEL.DEVICE", "cuda"])


def test_unreadable_image_names_the_file(tmp_path):
    from fastreid_ext.data.common import ExtCommDataset

    bad = tmp_path / "0001_c1s1_000001_01.jpg"
    bad.write_bytes(b"not a jpeg")
    ds = ExtCommDataset([(str(bad), 1, 0)], transform=None, relabel=False)
    with pytest.raises(OSError, match=str(bad)):
        ds[0]


def test_missing_extra_field_fails_when_the_dataset_is_built(tmp_path):
    from fastreid_ext.data.common import ExtCommDataset

    with pytest.raises(ValueError, match="attributes"):
        ExtCommDataset([(str(tmp_path / "a.jpg"), 1, 0)], extra_fields=("attributes",))


def test_attribute_file_missing_identities_are_named(tmp_path):
    import numpy as np

    from fastreid_ext.data.attributes import AttributeTable

    t = AttributeTable(path="x.mat", struct_name="market_attribute", names=["hat"],
                       values={"test": {2: np.array([1])}})
    with pytest.raises(ValueError, match=r"x\.mat.*2 identities.*0005, 0007"):
        t.require("test", [2, 5, 7])
