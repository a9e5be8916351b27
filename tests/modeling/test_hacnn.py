"""Tests for fastreid_ext.modeling.meta_arch.hacnn (HA-CNN, Li et al. CVPR 2018)."""

import pytest
import torch

from conftest import build_test_losses
from fastreid_ext.modeling.backbones.hacnn import (
    HACNN,
    ChannelAttn,
    HardAttn,
    HarmAttn,
    InceptionA,
    InceptionB,
    SoftAttn,
    SpatialAttn,
    build_hacnn_backbone,
    hard_attn_init_bias,
)
from fastreid_ext.modeling.meta_arch.hacnn import HACNNReID

PUBLISHED_BIAS = torch.tensor([0, -0.75, 0, -0.25, 0, 0.25, 0, 0.75], dtype=torch.float32)
MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]
STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]


def make_model(num_classes=751, losses=("CrossEntropyLoss",), **backbone_kwargs):
    torch.manual_seed(0)
    return HACNNReID(
        backbone=HACNN(**backbone_kwargs),
        num_classes=num_classes,
        pixel_mean=MEAN,
        pixel_std=STD,
        losses=build_test_losses(*losses),
    )


def images(b=2, h=160, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g) * 255


def n_params(m):
    return sum(p.numel() for p in m.parameters())


# --------------------------------------------------------------------------- #
def test_parameter_counts_match_reference_layout():
    model = make_model(num_classes=751)
    assert n_params(model.backbone) == 2_929_112
    assert n_params(model) == 3_699_638


def test_block_shapes():
    x = torch.randn(2, 32, 80, 32)
    assert InceptionA(32, 128)(x).shape == (2, 128, 80, 32)
    assert InceptionB(32, 128)(x).shape == (2, 128, 40, 16)
    y = torch.randn(2, 128, 40, 16)
    assert SpatialAttn()(y).shape == (2, 1, 40, 16)
    assert ChannelAttn(128)(y).shape == (2, 128, 1, 1)
    soft = SoftAttn(128)(y)
    assert soft.shape == y.shape and soft.min() >= 0 and soft.max() <= 1
    s, t = HarmAttn(128)(y)
    assert s.shape == y.shape and t.shape == (2, 4, 2)


def test_shapes_at_every_stage():
    net = HACNN().eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 160, 64), return_attention=True)
    assert [tuple(s.shape) for s in out["stages"]] == [
        (2, 32, 80, 32), (2, 128, 40, 16), (2, 256, 20, 8), (2, 384, 10, 4)
    ]
    assert [tuple(s.shape) for s in out["soft_attn"]] == [(2, 128, 40, 16), (2, 256, 20, 8), (2, 384, 10, 4)]
    assert all(tuple(t.shape) == (2, 4, 2) for t in out["theta"])
    expected_local = [(2, 128, 12, 14), (2, 256, 6, 7), (2, 384, 3, 4)]
    for maps, shape in zip(out["local_stages"], expected_local):
        assert len(maps) == 4 and all(tuple(m.shape) == shape for m in maps)
    assert out["global"].shape == (2, 512) and out["local"].shape == (2, 512)
    # default call returns the two features only
    assert set(net(torch.randn(2, 3, 160, 64)).keys()) == {"global", "local"}


def test_region_sampling_shapes():
    net = HACNN()
    x = torch.randn(2, 32, 80, 32)
    theta = torch.zeros(2, 4, 2)
    regions = net.sample_regions(x, theta, (24, 28))
    assert len(regions) == 4 and all(r.shape == (2, 32, 24, 28) for r in regions)


def test_hard_attention_initial_theta():
    assert torch.equal(hard_attn_init_bias(4), PUBLISHED_BIAS)
    ha = HardAttn(128)
    assert torch.count_nonzero(ha.fc.weight) == 0
    assert torch.equal(ha.fc.bias.detach(), PUBLISHED_BIAS)
    expected = torch.tanh(PUBLISHED_BIAS).view(4, 2)  # theta = tanh(W x + b), W = 0
    for x in (torch.randn(3, 128, 40, 16), torch.zeros(3, 128, 40, 16), 100 * torch.rand(3, 128, 40, 16)):
        theta = ha(x)
        assert theta.shape == (3, 4, 2)
        assert torch.allclose(theta, expected.expand(3, 4, 2), atol=1e-7)
    # same inside the full network, for every block
    net = HACNN().eval()
    with torch.no_grad():
        thetas = net(torch.randn(2, 3, 160, 64), return_attention=True)["theta"]
    for t in thetas:
        assert torch.allclose(t, expected.expand(2, 4, 2), atol=1e-7)


def test_eval_feature_is_two_unit_norm_halves():
    model = make_model().eval()
    x = images()
    with torch.no_grad():
        feat = model({"images": x})
    assert feat.shape == (2, 1024)
    assert torch.allclose(feat[:, :512].norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(feat[:, 512:].norm(dim=1), torch.ones(2), atol=1e-5)
    # a bare tensor is accepted too
    with torch.no_grad():
        assert torch.allclose(model(x), feat)


def test_train_mode_losses_and_input_unchanged():
    model = make_model(losses=("CrossEntropyLoss", "TripletLoss")).train()
    x = images()
    x_copy = x.clone()
    targets = torch.tensor([3, 5])
    t_copy = targets.clone()
    losses = model({"images": x, "targets": targets})
    assert set(losses) == {"loss_cls_global", "loss_cls_local", "loss_triplet_global", "loss_triplet_local"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    assert torch.equal(x, x_copy) and torch.equal(targets, t_copy)
    model.eval()
    with torch.no_grad():
        model({"images": x})
    assert torch.equal(x, x_copy)


def test_gradients_reach_all_parameters_and_hard_attention():
    model = make_model(num_classes=10).train()
    losses = model({"images": images(4), "targets": torch.tensor([0, 1, 2, 3])})
    sum(losses.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient for {name}"
        assert torch.isfinite(p.grad).all(), name
    for ha in (model.backbone.ha1, model.backbone.ha2, model.backbone.ha3):
        assert ha.hard_attn.fc.weight.grad.abs().sum() > 0
        assert ha.hard_attn.fc.bias.grad.abs().sum() > 0
    # Every weight must get a non-zero gradient. Conv biases are excluded: each conv is
    # followed by a training-mode BatchNorm, which subtracts the batch mean, so their exact
    # gradient is zero (what remains is float round-off, and may be exactly 0).
    n_zero = [
        n for n, p in model.named_parameters()
        if not n.endswith("conv.bias") and p.grad.abs().sum() == 0
    ]
    assert not n_zero, f"all-zero gradient for {n_zero}"


def test_rejects_other_input_sizes():
    model = make_model().eval()
    with pytest.raises(ValueError, match=r"256x128.*160x64"):
        model({"images": images(2, 256, 128)})
    with pytest.raises(ValueError, match="160x64"):
        HACNN()(torch.randn(2, 3, 320, 128))


def test_unknown_loss_name_is_rejected():
    with pytest.raises(ValueError, match="ArcFace"):
        make_model(losses=("CrossEntropyLoss", "ArcFace"))


def test_missing_targets_in_training():
    model = make_model().train()
    with pytest.raises(ValueError, match="targets"):
        model({"images": images()})


def test_global_only_variant():
    model = make_model(num_classes=5, use_local=False)
    losses = model.train()({"images": images(), "targets": torch.tensor([0, 1])})
    assert set(losses) == {"loss_cls_global"}
    with torch.no_grad():
        feat = model.eval()({"images": images()})
    assert feat.shape == (2, 512)


def test_fixed_regions_variant():
    net = HACNN(learn_region=False).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 160, 64), return_attention=True)
    for t in out["theta"]:
        assert torch.allclose(t, torch.tanh(PUBLISHED_BIAS).view(1, 4, 2).expand(2, 4, 2))
    # no HardAttn Linear(C, 8) in the three blocks
    assert n_params(net) == 2_929_112 - sum(c * 8 + 8 for c in (128, 256, 384))


def test_from_config():
    from fastreid_ext.config import get_ext_cfg

    cfg = get_ext_cfg()
    cfg.MODEL.META_ARCHITECTURE = "HACNNReID"
    cfg.MODEL.BACKBONE.NAME = "build_hacnn_backbone"
    cfg.MODEL.HEADS.NUM_CLASSES = 751
    cfg.MODEL.LOSSES.NAME = ("CrossEntropyLoss", "TripletLoss")
    cfg.INPUT.SIZE_TRAIN = [160, 64]
    cfg.INPUT.SIZE_TEST = [160, 64]

    from fastreid.modeling.meta_arch.build import META_ARCH_REGISTRY

    model = META_ARCH_REGISTRY.get("HACNNReID")(cfg)
    assert isinstance(model, HACNNReID) and isinstance(model.backbone, HACNN)
    assert n_params(model) == 3_699_638
    assert model.device == torch.device("cpu")
    assert isinstance(build_hacnn_backbone(cfg), HACNN)

    bad = cfg.clone()
    bad.INPUT.SIZE_TRAIN = [256, 128]
    with pytest.raises(ValueError, match="256x128"):
        HACNNReID(bad)
    # any registered loss that reads what a branch provides works, e.g. FastReID's circle loss ...
    other = cfg.clone()
    other.MODEL.LOSSES.NAME = ("CrossEntropyLoss", "CircleLoss")
    out = HACNNReID(other).train()({"images": images(4), "targets": torch.tensor([0, 0, 1, 1])})
    assert set(out) == {"loss_cls_global", "loss_cls_local", "loss_circle_global", "loss_circle_local"}
    # ... a loss reading a tensor HA-CNN does not have is refused when the model is built
    bad = cfg.clone()
    bad.MODEL.LOSSES.NAME = ("CrossEntropyLoss", "AttributeCrossEntropyLoss")
    with pytest.raises(ValueError, match="AttributeCrossEntropyLoss.*attr_logits"):
        HACNNReID(bad)
    bad.MODEL.LOSSES.NAME = ("CrossEntropyLoss", "ArcFace")
    with pytest.raises(KeyError, match="unknown loss 'ArcFace'.*CircleLoss"):
        HACNNReID(bad)


def test_sgd_steps_reduce_loss():
    model = make_model(num_classes=4).train()
    x = images(8, seed=1)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    history = []
    for _ in range(6):
        loss = sum(model({"images": x, "targets": y}).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert history[-1] < history[0], history
