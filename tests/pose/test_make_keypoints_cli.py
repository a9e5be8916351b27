"""tools/make_keypoints.py on a registered dataset: the files land where training finds them with no extra key,
load into the dataset and reach the batch as heatmaps; user errors are one ``error:`` line (status 2)."""

import numpy as np
import pytest
import torch
from pose_helpers import StubPose, tool

from conftest import make_cfg
from fastreid_ext.errors import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    from fastreid_ext.data.synthetic import generate

    root = tmp_path_factory.mktemp("pose_cli")
    generate(str(root / "synthetic_market"), domain="market", num_train_ids=3, num_test_ids=3, seed=5, progress=False)
    return root


def _cli(argv, monkeypatch, model=None, capsys=None):
    from fastreid_ext.pose import base

    monkeypatch.setattr(base, "build_pose_model", lambda *a, **k: model or StubPose())
    mk = tool()
    args = mk.argument_parser().parse_args([*argv, "--no-progress"])
    return run_cli(lambda: mk.main(args))


def test_dataset_keypoints_reach_the_batch_as_heatmaps(tiny_root, monkeypatch, capsys):
    from fastreid_ext.data import build_test_loader
    from fastreid_ext.data.coco_keypoints import read_coco_keypoints
    from fastreid_ext.data.keypoints import render_heatmaps

    kp_dir = tiny_root / "synthetic_market" / "keypoints"
    argv = ["--dataset", "SyntheticMarket", "--root", str(tiny_root)]
    assert _cli(argv, monkeypatch) == 2  # the generator's ground truth is there: never overwritten silently
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "not written by the pose tool" in err[0]
    assert _cli(argv + ["--overwrite"], monkeypatch) == 0
    out = capsys.readouterr().out
    for split in ("bounding_box_train", "query", "bounding_box_test"):
        assert f"{split} " in out
        assert read_coco_keypoints(str(kp_dir / f"person_keypoints_{split}.json")).info["pose_tool"]

    cfg = make_cfg("configs/Synthetic/bagtricks_R18.yml", [
        "DATASETS.ROOT", str(tiny_root), "DATASETS.TESTS", '("SyntheticMarket",)', "INPUT.SIZE_TEST", "[128, 64]",
        "INPUT.EXTRA_FIELDS", '["keypoints", "heatmaps"]', "DATALOADER.NUM_WORKERS", "0", "TEST.IMS_PER_BATCH", "4"])
    loader, _ = build_test_loader(cfg, "SyntheticMarket")  # DATASETS.KEYPOINTS_DIR "": the default location
    batch = next(iter(loader))
    assert batch["heatmaps"].shape == (4, 17, 64, 32)
    query = read_coco_keypoints(str(kp_dir / "person_keypoints_query.json"))
    for i, path in enumerate(batch["img_paths"]):
        kp = query.keypoints[path.rsplit("/", 1)[1]]  # 64x128 crops at 128x64: test-time resize is 1:1
        assert torch.allclose(batch["keypoints"][i], torch.from_numpy(kp), atol=1e-4)
        assert torch.allclose(batch["heatmaps"][i], render_heatmaps(kp, (128, 64), (64, 32), cfg.INPUT.HEATMAP.SIGMA))
    assert any(float(batch["heatmaps"][i].max()) > 0.5 for i in range(4))


def test_stored_heatmaps_reach_the_batch_at_the_keypoints(tiny_root, monkeypatch, tmp_path):
    """--save-heatmaps, read back by the loaders with INPUT.HEATMAP.SOURCE stored: each joint's map in the batch
    peaks at that joint's keypoint (the stand-in model puts a Gaussian at every keypoint it returns)."""
    from fastreid_ext.data import build_test_loader
    from fastreid_ext.data.coco_keypoints import read_coco_keypoints

    out = tmp_path / "kp"
    assert _cli(["--dataset", "SyntheticMarket", "--root", str(tiny_root), "--out", str(out), "--save-heatmaps",
                 "--vis-thr", "0"], monkeypatch) == 0
    cfg = make_cfg("configs/Synthetic/bagtricks_R18.yml", [
        "DATASETS.ROOT", str(tiny_root), "DATASETS.TESTS", '("SyntheticMarket",)', "INPUT.SIZE_TEST", "[128, 64]",
        "INPUT.EXTRA_FIELDS", '["keypoints", "heatmaps"]', "INPUT.HEATMAP.SOURCE", "stored",
        "DATASETS.KEYPOINTS_DIR", str(out), "DATALOADER.NUM_WORKERS", "0", "TEST.IMS_PER_BATCH", "4"])
    loader, _ = build_test_loader(cfg, "SyntheticMarket")
    batch = next(iter(loader))
    hm = batch["heatmaps"]
    assert hm.shape == (4, 17, 64, 32)
    query = read_coco_keypoints(str(out / "person_keypoints_query.json"))
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(32.0), indexing="ij")
    checked = 0
    for i, path in enumerate(batch["img_paths"]):
        kp = torch.from_numpy(query.keypoints[path.rsplit("/", 1)[1]][:, :2])
        for k in range(17):  # the map's peak (mean of the cells at >= half its maximum), in crop pixels
            m = hm[i, k] * (hm[i, k] >= 0.5 * hm[i, k].max())
            if m.sum() == 0 or kp[k, 0] < 8 or kp[k, 0] > 55 or kp[k, 1] < 8 or kp[k, 1] > 119:
                continue  # maps cut by the crop's border are not symmetric around the keypoint
            peak = torch.stack([(m * xs).sum(), (m * ys).sum()]) / m.sum() * 2 + 0.5
            assert (peak - kp[k]).abs().max() < 1.0, (path, k, peak, kp[k])
            checked += 1
    assert checked >= 20


@pytest.mark.parametrize("argv,words", [
    (["--dataset", "NoSuchSet"], ["unknown dataset 'NoSuchSet'"]),
    (["--images", "/nonexistent/crops"], ["image folder not found", "/nonexistent/crops"]),
    (["--dataset", "SyntheticMarket", "--shard", "3/3"], ["--shard 3/3"]),
    (["--images", "{root}/synthetic_market/query", "--model", "hrnet"], ["--model hrnet needs --checkpoint"]),
])
def test_user_errors_are_one_line(argv, words, monkeypatch, capsys, tiny_root):
    from fastreid_ext.pose import base

    mk = tool()
    monkeypatch.setattr(base, "build_pose_model", lambda *a, **k: StubPose())
    args = mk.argument_parser().parse_args([a.format(root=tiny_root) for a in argv] + ["--root", str(tiny_root)])
    assert run_cli(lambda: mk.main(args)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    for w in words:
        assert w in err[0]


def test_default_model_follows_the_checkpoint():
    mk = tool()
    parse = mk.argument_parser().parse_args
    assert mk.choose_model(parse(["--images", "x"])) == "blazepose"
    assert mk.choose_model(parse(["--images", "x", "--checkpoint", "w.pth"])) == "hrnet"
    assert mk.choose_model(parse(["--images", "x", "--checkpoint", "m.tflite"])) == "blazepose"
    assert np.isclose(parse(["--images", "x"]).vis_thr, 0.3)
