"""RBNet (issue 10): shapes, gradients, the mask's effect, heatmap targets under augmentation, eq. 4."""

import pytest
import torch

from conftest import make_cfg

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.HEADS.NUM_CLASSES", "8"]


def _model(config="configs/Synthetic/rbnet_R18.yml", opts=()):
    from fastreid.modeling import build_model

    torch.manual_seed(0)
    return build_model(make_cfg(config, CPU + list(opts)))


def _batch(B=8, H=128, W=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    kp = torch.rand(B, 17, 3, generator=g) * torch.tensor([W - 1, H - 1, 0]) + torch.tensor([0, 0, 2.0])
    return {"images": torch.rand(B, 3, H, W, generator=g) * 255, "targets": torch.arange(B) % 4,
            "heatmaps": torch.rand(B, 17, H // 2, W // 2, generator=g), "keypoints": kp}


@pytest.mark.parametrize("config,size,stages,blocks", [
    ("configs/Synthetic/rbnet_R18.yml", (128, 64),
     [(64, 64, 32), (64, 32, 16), (128, 16, 8), (256, 8, 4), (512, 8, 4)], [1, 1, 1, 1]),
    # the paper's ResNet-50 (Table 1 at half the input: 128x64 -> everything /2)
    ("configs/Market1501/rbnet_R50.yml", (128, 64),
     [(64, 64, 32), (256, 32, 16), (512, 16, 8), (1024, 8, 4), (2048, 8, 4)], [2, 3, 5, 2]),
])
def test_shapes_at_every_stage(config, size, stages, blocks):
    H, W = size
    model = _model(config, ["INPUT.SIZE_TRAIN", f"[{H}, {W}]", "INPUT.SIZE_TEST", f"[{H}, {W}]"]).eval()
    assert [len(r.blocks) for r in model.decoder.relayers] == blocks  # Table 1: 2, 3, 5, 2 for ResNet-50
    x = model.preprocess_image({"images": torch.rand(2, 3, H, W) * 255})
    with torch.no_grad():
        enc = model.encode(x)
        dec = model.decoder(enc["stages"], (H, W))
    assert [tuple(s.shape[1:]) for s in enc["stages"]] == stages
    c = [s[0] for s in stages]
    # re-layer k gives the shape of backbone layer k's input (Table 1's right-hand side)
    assert tuple(dec["relayer4"].shape[1:]) == (c[3], *stages[3][1:])
    assert tuple(dec["relayer3"].shape[1:]) == (c[2], *stages[2][1:])
    assert tuple(dec["relayer2"].shape[1:]) == (c[1], *stages[1][1:])
    assert tuple(dec["relayer1"].shape[1:]) == (c[0], *stages[1][1:])
    assert tuple(dec["heatmaps"].shape[1:]) == (17, H // 2, W // 2)  # eq. 3: half the input
    assert tuple(enc["mask"].shape[1:]) == (1, H, W)
    with torch.no_grad():
        out = model.inference({"images": torch.rand(2, 3, H, W) * 255})
    assert out["features"].shape == (2, 2 * model.heads.bottleneck[0].num_features)


def test_resnet_stages_equal_the_backbone_forward():
    from fastreid_ext.modeling.layers.reverse_backbone import resnet_stages

    model = _model().eval()
    x = torch.randn(2, 3, 128, 64)
    with torch.no_grad():
        assert torch.allclose(resnet_stages(model.backbone, x)[-1], model.backbone(x), atol=1e-5)


def test_decoder_output_grid_matches_the_batch_heatmaps(synthetic_root):
    from fastreid_ext.data import build_train_loader

    cfg = make_cfg("configs/Synthetic/rbnet_R18.yml", CPU + [
        "DATASETS.ROOT", str(synthetic_root), "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "8",
        "DATALOADER.NUM_INSTANCE", "2"])
    batch = next(iter(build_train_loader(cfg)))
    model = _model(opts=["DATASETS.ROOT", str(synthetic_root)]).eval()
    with torch.no_grad():
        pred = model.inference(batch)["heatmaps"]
    assert pred.shape == batch["heatmaps"].shape == (8, 17, 64, 32)
    assert batch["keypoints"].shape == (8, 17, 3)


def test_heatmap_stride_one_is_table_1s_full_resolution():
    model = _model(opts=["MODEL.RBNET.HEATMAP_STRIDE", "1", "INPUT.HEATMAP.SIZE", "[128, 64]"]).eval()
    with torch.no_grad():
        assert model.inference({"images": torch.rand(1, 3, 128, 64)})["heatmaps"].shape == (1, 17, 128, 64)
    with pytest.raises(ValueError, match=r"INPUT.HEATMAP.SIZE is \[0, 0\]: set it to \[128, 64\]"):
        _model(opts=["MODEL.RBNET.HEATMAP_STRIDE", "1"])


def test_gradients_reach_decoder_both_backbones_and_mask():
    from fastreid.utils.events import EventStorage

    model = _model().train()
    with EventStorage(0):
        losses = model(_batch())
    assert set(losses) == {"loss_cls", "loss_triplet", "loss_cls2", "loss_triplet2", "loss_mse"}
    sum(losses.values()).backward()
    parts = {
        "backbone 1": model.backbone.conv1.weight, "backbone 2": model.backbone2.conv1.weight,
        "re-layer 4": model.decoder.relayers[3].blocks[0].conv1.weight,
        "re-layer 1": model.decoder.relayers[0].blocks[-1].conv3.weight,
        "re-conv-1": model.decoder.fusion.conv.weight, "mask": model.mask_head.change[0].weight,
        "head 2": model.heads2.weight,
    }
    for name, p in parts.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_mask_only_path_from_backbone2_losses_reaches_the_decoder():
    """Backbone 2's losses alone train the mask and, through it, the decoder and backbone 1."""
    from fastreid.utils.events import EventStorage

    model = _model().train()
    with EventStorage(0):
        losses = model(_batch())
    (losses["loss_cls2"] + losses["loss_triplet2"]).backward()
    assert model.mask_head.change[0].weight.grad.abs().sum() > 0
    assert model.decoder.relayers[0].blocks[-1].conv3.weight.grad.abs().sum() > 0
    assert model.backbone.layer1[0].conv1.weight.grad.abs().sum() > 0
    assert model.decoder.fusion.conv.weight.grad is None  # the heatmap output is not on this path


def test_mask_really_changes_backbone2_input():
    model = _model().eval()
    seen = {}
    model.backbone2.conv1.register_forward_pre_hook(lambda m, inp: seen.__setitem__("x", inp[0].clone()))
    with torch.no_grad():  # a mask that is not 1 everywhere
        model.mask_head.change[0].weight.normal_(0, 0.5)
        model.mask_head.change[0].bias.fill_(0.5)
        batch = _batch(B=2)
        model.inference(batch)
        x = model.preprocess_image(batch)
        enc = model.encode(x)
    assert not torch.allclose(enc["mask"], torch.ones_like(enc["mask"]))
    assert torch.allclose(seen["x"], x * enc["mask"], atol=1e-6)
    assert not torch.allclose(seen["x"], x, atol=1e-3)


def test_mask_starts_as_identity():
    model = _model().eval()
    with torch.no_grad():
        enc = model.encode(model.preprocess_image(_batch(B=2)))
    assert torch.allclose(enc["mask"], torch.ones_like(enc["mask"]), atol=0.05)


def test_equation_4_weights_and_keys():
    from fastreid.utils.events import EventStorage

    def losses(opts):
        model = _model(opts=opts).train()
        torch.manual_seed(1)
        with EventStorage(0):
            return {k: float(v.detach()) for k, v in model(_batch()).items()}

    base = losses(["MODEL.RBNET.MSE_WEIGHT_MODE", "fixed", "MODEL.RBNET.WEIGHTS.MSE", "1.0"])
    w = losses(["MODEL.RBNET.MSE_WEIGHT_MODE", "fixed", "MODEL.RBNET.WEIGHTS.ID", "2.0", "MODEL.RBNET.WEIGHTS.TRI",
                "3.0", "MODEL.RBNET.WEIGHTS.MSE", "5.0", "MODEL.RBNET.WEIGHTS.ID2", "7.0", "MODEL.RBNET.WEIGHTS.TRI2", "11.0"])
    for key, factor in [("loss_cls", 2), ("loss_triplet", 3), ("loss_mse", 5), ("loss_cls2", 7), ("loss_triplet2", 11)]:
        assert w[key] == pytest.approx(factor * base[key], rel=1e-4), key
    # match_triplet: on the first step l3 L_mse equals backbone 1's triplet term
    m = losses(["MODEL.RBNET.MSE_WEIGHT_MODE", "match_triplet"])
    assert m["loss_mse"] == pytest.approx(m["loss_triplet"], rel=1e-4)


def test_match_triplet_weight_follows_running_means_and_is_saved():
    model = _model(opts=["MODEL.RBNET.MSE_WEIGHT_MODE", "match_triplet", "MODEL.RBNET.MSE_WEIGHT_MOMENTUM", "0.5"])
    model.train()
    assert model.mse_weight(torch.tensor(0.4), torch.tensor(0.01)) == pytest.approx(40.0)
    assert model.mse_weight(torch.tensor(0.2), torch.tensor(0.01)) == pytest.approx(30.0)  # (0.4+0.2)/2 / 0.01
    assert "loss_ema" in model.state_dict()
    model.eval()  # eval does not move the running means
    assert model.mse_weight(torch.tensor(5.0), torch.tensor(0.01)) == pytest.approx(30.0)


def test_swapping_rbnet_into_bagtricks_needs_only_meta_arch_and_keypoint_fields():
    model = _model("configs/Synthetic/bagtricks_R18.yml",
                   ["MODEL.META_ARCHITECTURE", "RBNet", "INPUT.EXTRA_FIELDS", '["keypoints", "heatmaps"]'])
    assert "KeypointMSELoss" in model.loss_fns  # added to the stock loss list
    with pytest.raises(ValueError, match="INPUT.EXTRA_FIELDS"):
        _model("configs/Synthetic/bagtricks_R18.yml", ["MODEL.META_ARCHITECTURE", "RBNet"])


def test_mask_sources_of_table_2():
    for source in ("conv1", "relayer2"):
        model = _model(opts=["MODEL.RBNET.MASK_SOURCE", source]).eval()
        with torch.no_grad():
            enc = model.encode(model.preprocess_image(_batch(B=1)))
        assert enc["mask"].shape == (1, 1, 128, 64)
    with pytest.raises(ValueError, match="MASK_SOURCE"):
        _model(opts=["MODEL.RBNET.MASK_SOURCE", "layer4"])


def test_keypoint_fusion_groups_are_per_keypoint():
    """re-conv-1's grouped convolution: heatmap k depends only on the channels of keypoint k."""
    from fastreid_ext.modeling.layers.reverse_backbone import KeypointFusion

    torch.manual_seed(0)
    fusion = KeypointFusion([8, 16], num_keypoints=17, width=2)
    levels = [torch.randn(1, 8, 4, 4), torch.randn(1, 16, 2, 2)]
    grouped = fusion.grouped(levels, (4, 4)).detach().requires_grad_(True)
    out = fusion.conv(grouped)
    out[0, 3].sum().backward()
    g = grouped.grad[0].abs().sum(dim=(1, 2)).view(17, -1)  # channels of keypoint k: group k
    assert (g[3] > 0).all() and g[torch.arange(17) != 3].sum() == 0


# ----------------------------------------------------------------------------- targets under augmentation
def _synthetic_image(synthetic_root):
    from fastreid.data.datasets import DATASET_REGISTRY

    from fastreid_ext.data.common import read_image
    from fastreid_ext.data.dataset_keypoints import attach_keypoints

    ds = DATASET_REGISTRY.get("SyntheticMarket")(root=str(synthetic_root))
    path, _, _, extras = next(it for it in attach_keypoints(ds.train, ds) if (it[3]["keypoints"][:, 2] > 0).sum() >= 15)
    return read_image(path), extras["keypoints"]


def _transform(opts):
    from fastreid_ext.data.keypoints import KeypointTransform

    base = ["INPUT.SIZE_TRAIN", "[128, 64]", "INPUT.PADDING.ENABLED", "False", "INPUT.REA.ENABLED", "False",
            "INPUT.FLIP.ENABLED", "False"]
    return KeypointTransform(make_cfg(opts=base + list(opts)), is_train=True)


def test_flipped_image_gives_mirrored_left_right_swapped_heatmaps(synthetic_root):
    from fastreid_ext.data.coco_keypoints import FLIP_INDEX
    from fastreid_ext.data.keypoints import render_heatmaps

    img, kp = _synthetic_image(synthetic_root)
    plain = _transform([])(img, kp)
    flip = _transform(["INPUT.FLIP.ENABLED", "True", "INPUT.FLIP.PROB", "1.0"])(img, kp)
    h0 = render_heatmaps(plain.keypoints, (128, 64), (64, 32))
    h1 = render_heatmaps(flip.keypoints, (128, 64), (64, 32))
    assert torch.allclose(h1, h0.flip(-1)[list(FLIP_INDEX)], atol=1e-5)
    assert not torch.allclose(h1, h0.flip(-1), atol=1e-3)  # the swap matters (left != right joints)


def test_stored_maps_follow_pad_crop_and_flip_like_the_pixels(synthetic_root):
    """Maps given with the image (a pose model's heatmaps on the crop) move exactly like the keypoints."""
    import random

    from fastreid_ext.data.keypoints import render_heatmaps
    from fastreid_ext.evaluation.keypoints import heatmap_peaks

    img, kp = _synthetic_image(synthetic_root)
    maps = render_heatmaps(kp, (img.height, img.width), (img.height, img.width), sigma=2.0)
    tf = _transform(["INPUT.PADDING.ENABLED", "True", "INPUT.PADDING.SIZE", "8", "INPUT.FLIP.ENABLED", "True",
                     "INPUT.FLIP.PROB", "1.0"])
    random.seed(5)
    out = tf(img, kp, maps)
    vis = torch.from_numpy(out.keypoints[:, 2] > 0) & (out.maps.amax(dim=(1, 2)) > 0.5)
    assert vis.sum() >= 12
    peaks = heatmap_peaks(out.maps[None], (128, 64))[0]
    err = (peaks[vis] - torch.from_numpy(out.keypoints[vis, :2])).abs().max()
    assert err <= 1.0, err


def test_random_erasing_blanks_heatmaps_and_masks_erased_joints(synthetic_root):
    import random

    from fastreid_ext.data.keypoints import erase_maps, render_heatmaps

    img, kp = _synthetic_image(synthetic_root)
    plain = _transform([])(img, kp)
    tf = _transform(["INPUT.REA.ENABLED", "True", "INPUT.REA.PROB", "1.0"])
    for seed in range(40):  # find an erasure that covers a joint
        random.seed(seed)
        torch.manual_seed(seed)
        out = tf(img, kp)
        (i, j, h, w), = out.erased
        hit = ((plain.keypoints[:, 2] > 0) & (plain.keypoints[:, 0] + 0.5 >= j) & (plain.keypoints[:, 0] + 0.5 < j + w)
               & (plain.keypoints[:, 1] + 0.5 >= i) & (plain.keypoints[:, 1] + 0.5 < i + h))
        if hit.any():
            break
    assert hit.any()
    assert (out.keypoints[hit, 2] == 0).all() and (out.keypoints[~hit, 2] == plain.keypoints[~hit, 2]).all()
    # the pixels are erased there
    assert not torch.allclose(out.image[:, i:i + h, j:j + w], plain.image[:, i:i + h, j:j + w])
    hm = erase_maps(render_heatmaps(out.keypoints, (128, 64), (64, 32)), out.erased, (128, 64))
    full = render_heatmaps(plain.keypoints, (128, 64), (64, 32))
    cell_y = (torch.arange(64) + 0.5) * 2 - 0.5
    cell_x = (torch.arange(32) + 0.5) * 2 - 0.5
    inside = ((cell_y >= i - 0.5) & (cell_y < i + h - 0.5))[:, None] & ((cell_x >= j - 0.5) & (cell_x < j + w - 0.5))[None]
    assert inside.any() and hm[:, inside].abs().max() == 0
    keep = ~hit
    assert torch.allclose(hm[keep][:, ~inside], full[keep][:, ~inside], atol=1e-6)


def test_flip_test_unflips_predicted_heatmaps():
    """TEST.FLIP: the mirrored image's heatmaps are mirrored back and their left/right joints swapped."""
    from fastreid_ext.compat import FlipAverage
    from fastreid_ext.data.coco_keypoints import FLIP_INDEX

    class Model(torch.nn.Module):  # heatmap k = (k + 1) * the image's first channel
        def forward(self, inputs):
            x = inputs["images"][:, :1]
            return {"features": x.flatten(1), "heatmaps": x * torch.arange(1.0, 18.0).view(1, 17, 1, 1)}

    x = torch.rand(1, 3, 4, 6, generator=torch.Generator().manual_seed(0))
    out = FlipAverage(Model())({"images": x})
    k = torch.arange(1.0, 18.0)
    want = x[:, :1] * ((k + k[list(FLIP_INDEX)]) / 2).view(1, 17, 1, 1)
    assert torch.allclose(out["heatmaps"], want, atol=1e-6)


def test_visualize_tool_writes_figure_3_and_the_measures(tmp_path):
    import json
    import sys

    from conftest import REPO

    from fastreid_ext.data.coco_keypoints import read_coco_keypoints
    from fastreid_ext.data.synthetic import generate

    root = tmp_path / "data"
    generate(str(root / "synthetic_market"), num_train_ids=2, num_test_ids=3, progress=False, silhouettes=True)
    sys.path.insert(0, str(REPO / "tools"))
    import visualize_rbnet

    out = tmp_path / "vis"
    m = visualize_rbnet.main(["--config-file", str(REPO / "configs/Synthetic/rbnet_R18.yml"), "--output", str(out),
                              "--num", "2", "DATASETS.ROOT", str(root), "DATALOADER.NUM_WORKERS", "0",
                              "INPUT.SIZE_TEST", "[64, 32]", "INPUT.SIZE_TRAIN", "[64, 32]", "MODEL.DEVICE", "cpu"])
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 2 and all(p.stat().st_size > 5000 for p in pngs)
    assert json.loads((out / "rbnet_measures.json").read_text())["images"] == m["images"]
    # every labelled joint of the query and gallery files is scored
    files = [read_coco_keypoints(str(root / "synthetic_market/keypoints" / f"person_keypoints_{s}.json"))
             for s in ("query", "bounding_box_test")]
    assert m["labelled_joints"] == sum(int((k[:, 2] > 0).sum()) for f in files for k in f.keypoints.values())
    # an untrained mask is ~1 everywhere: its share on the person is the silhouette's share of the pixels
    assert 5 < m["mask_uniform"] < 60 and m["mask_on_person"] == pytest.approx(m["mask_uniform"], abs=1.0)
