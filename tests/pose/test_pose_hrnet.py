"""mmpose HRNet-w32 in the pose tool (fastreid_ext/pose/hrnet.py) with random weights (nothing is downloaded):
same output as mmpose's own ``inference_topdown``, official checkpoints with a ``meta`` entry load safely,
and the tool end to end on synthetic crops (keypoints, stored heatmaps whose affine fits, pictures)."""

import argparse
import os
import shutil

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")

try:
    from fastreid_ext.pose.hrnet import HRNetPose, import_mmpose, load_checkpoint

    import_mmpose()
except ImportError as e:  # make venv installs them; a bare environment skips with the reason
    pytest.skip(f"mmpose stack not installed: {e}", allow_module_level=True)


@pytest.fixture(scope="module")
def hrnet():
    torch.manual_seed(0)
    model = HRNetPose(None, device="cpu")
    with torch.no_grad():  # random weights whose maps have positive maxima (else every joint decodes to -1)
        model.model.head.final_layer.bias += 0.5
    return model


@pytest.fixture(scope="module")
def crops(synthetic_root):
    folder = synthetic_root / "synthetic_market" / "query"
    names = sorted(os.listdir(folder))[:3]
    from PIL import Image

    return folder, names, [np.asarray(Image.open(folder / n).convert("RGB")) for n in names]


def test_same_keypoints_scores_and_heatmaps_as_mmpose_inference_topdown(hrnet, crops):
    from mmpose.apis import inference_topdown

    _, _, images = crops
    images = images[:2]
    ours = hrnet.predict([hrnet.prepare(im) for im in images], heatmaps=True)
    hrnet.model.test_cfg["output_heatmaps"] = True
    try:
        theirs = [inference_topdown(hrnet.model, im[..., ::-1].copy())[0] for im in images]  # mmpose reads BGR
    finally:
        hrnet.model.test_cfg.pop("output_heatmaps")
    for i, r in enumerate(theirs):
        np.testing.assert_allclose(ours.keypoints[i], r.pred_instances.keypoints[0], atol=1e-4)
        np.testing.assert_allclose(ours.scores[i], r.pred_instances.keypoint_scores[0], atol=1e-5)
        np.testing.assert_allclose(ours.heatmaps[i], r.pred_fields.heatmaps.cpu().numpy(), atol=1e-5)
    assert len({tuple(k) for k in ours.keypoints[0].round(2)}) > 5  # real argmax positions, not -1 sentinels
    assert hrnet.flip_test and hrnet.identity["flip_test"] is True  # mmpose's default


def _official(model, path, meta_extra=None, rename_head=False):
    """A checkpoint as mmpose/mmengine save it: ``meta`` (dataset metadata with numpy arrays, versions,
    epoch) and ``state_dict``; ``rename_head``: mmpose 0.x key names."""
    state = {(("keypoint_head." + k[5:]) if rename_head and k.startswith("head.") else k): v.clone()
             for k, v in model.model.state_dict().items()}
    state[next(k for k in state if k.endswith("final_layer.weight"))] *= -1  # differs from the model
    meta = {"mmengine_version": "0.10.7", "epoch": 210, "iter": 123, "seed": np.int64(21),
            "dataset_meta": dict(model.model.dataset_meta), **(meta_extra or {})}
    torch.save({"meta": meta, "state_dict": state}, path)
    return state


def test_official_checkpoint_with_meta_loads_without_unsafe_pickle(hrnet, tmp_path):
    import pickle

    path = tmp_path / "td-hm_hrnet-w32_coco-256x192.pth"
    state = _official(hrnet, path, rename_head=True)
    with pytest.raises(pickle.UnpicklingError):  # the problem: torch's default refuses the numpy arrays
        torch.load(path, weights_only=True)
    loaded = HRNetPose(str(path), device="cpu")
    mine = loaded.model.state_dict()
    for k, v in state.items():
        assert torch.equal(mine[k.replace("keypoint_head.", "head.")], v)
    assert loaded.identity["weights_sha256"] != "random-init" and path.name in loaded.describe()


def test_checkpoint_objects_beyond_numpy_need_trust(hrnet, tmp_path):
    path = tmp_path / "odd.pth"
    _official(hrnet, path, meta_extra={"args": argparse.Namespace(lr=0.1)})
    with pytest.raises(ValueError, match="Namespace.*--trust-checkpoint"):
        load_checkpoint(str(path))
    assert "head.final_layer.weight" in load_checkpoint(str(path), trust=True)
    other = tmp_path / "wholebody.pth"
    meta = dict(hrnet.model.dataset_meta, num_keypoints=133, dataset_name="coco_wholebody")
    torch.save({"meta": {"dataset_meta": meta}, "state_dict": {"w": torch.zeros(1)}}, other)
    with pytest.raises(ValueError, match="coco_wholebody.*not COCO-17"):
        load_checkpoint(str(other))
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_checkpoint(str(tmp_path / "nope.pth"))


def test_tool_end_to_end_with_heatmaps_and_pictures(hrnet, crops, tmp_path, monkeypatch, capsys):
    from fastreid_ext.data.coco_keypoints import read_coco_keypoints
    from fastreid_ext.data.stored_heatmaps import StoredHeatmaps
    from fastreid_ext.pose import base
    from pose_helpers import tool

    folder, names, _ = crops
    data = tmp_path / "crops"
    data.mkdir()
    for n in names:
        shutil.copy(folder / n, data / n)
    monkeypatch.setattr(base, "build_pose_model", lambda *a, **k: hrnet)  # the fixture's model (positive maps)
    make_keypoints = tool()
    args = make_keypoints.argument_parser().parse_args(
        ["--images", str(data), "--model", "hrnet", "--random-init", "--save-heatmaps", "--visualize", "2",
         "--batch-size", "2", "--no-progress"])
    summary = make_keypoints.main(args)
    assert summary.processed == 3
    out = tmp_path / "keypoints"
    kf = read_coco_keypoints(str(out / "person_keypoints_crops.json"))
    assert sorted(kf.keypoints) == names and kf.info["pose_tool"]["identity"]["weights_sha256"] == "random-init"
    maps = StoredHeatmaps(str(out / "heatmaps_crops.json"))
    assert maps.shape == (3, 17, 64, 48) and maps.info["identity"]["model"] == "hrnet"
    for n in names:  # the stored affine maps each written keypoint onto its map's maximum
        raw, affine, crop = maps.raw(n)
        assert crop == (128, 64)
        hm = raw.astype(np.float32)
        inv = np.linalg.inv(np.vstack([affine, [0, 0, 1]]))[:2]
        uv = np.rint(kf.keypoints[n][:, :2] @ inv[:, :2].T + inv[:, 2]).astype(int)  # drops the 1/4-pixel step
        ok = kf.scores[n] > 0
        assert ok.sum() >= 10
        at = hm[np.arange(17)[ok], uv[ok, 1], uv[ok, 0]]
        np.testing.assert_allclose(at, hm.reshape(17, -1).max(1)[ok], atol=2e-3)  # float16 storage
        np.testing.assert_allclose(at, kf.scores[n][ok], atol=2e-3)
    assert (out / "vis" / "pose_crops.png").stat().st_size > 10_000
    assert "visualized" in capsys.readouterr().out
