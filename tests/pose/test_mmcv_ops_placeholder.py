"""The one ``mmcv.ops`` placeholder (fastreid_ext/pose/mmcv_ops_placeholder.py): mmpose imports with mmcv-lite,
the stood-in operator raises when built, every other name stays missing, a real mmcv.ops is never replaced."""

import sys
import types

import pytest

pytest.importorskip("mmcv", reason="mmcv-lite is not installed (make venv installs it from requirements.txt)")

from fastreid_ext.pose import mmcv_ops_placeholder as placeholder  # noqa: E402


@pytest.fixture
def ops_placeholder():
    from fastreid_ext.pose.hrnet import import_mmpose

    import_mmpose()  # installs the placeholder, then imports all of mmpose
    return sys.modules["mmcv.ops"]


def test_mmpose_imports_on_mmcv_lite_with_the_placeholder(ops_placeholder):
    import mmpose.models.heads.transformer_heads.edpose_head as edpose  # the head that needs mmcv.ops

    assert placeholder.installed() and ops_placeholder is sys.modules["mmcv"].ops
    assert edpose.MultiScaleDeformableAttention is placeholder.MultiScaleDeformableAttention


def test_building_the_stood_in_operator_raises(ops_placeholder):
    from mmcv.ops import MultiScaleDeformableAttention

    with pytest.raises(placeholder.MmcvOpsUnavailable, match="placeholder.*mmcv-lite.*full mmcv"):
        MultiScaleDeformableAttention(embed_dims=256)


def test_other_operators_stay_missing_so_mmposes_fallbacks_work(ops_placeholder):
    with pytest.raises(ImportError):
        exec("from mmcv.ops import DeformConv2d")
    from mmpose.models.necks import posewarper_neck

    assert posewarper_neck.has_mmcv_full is False  # its own try/except saw "no full mmcv"


def test_install_is_idempotent_and_never_replaces_real_ops(ops_placeholder, monkeypatch):
    assert placeholder.install() is True and sys.modules["mmcv.ops"] is ops_placeholder
    real = types.ModuleType("mmcv.ops")
    monkeypatch.setitem(sys.modules, "mmcv.ops", real)  # e.g. full mmcv already imported
    assert placeholder.install() is False and sys.modules["mmcv.ops"] is real
    monkeypatch.delitem(sys.modules, "mmcv.ops")
    monkeypatch.setattr(placeholder, "_real_ops_available", lambda: True)  # compiled mmcv._ext present
    assert placeholder.install() is False and "mmcv.ops" not in sys.modules
