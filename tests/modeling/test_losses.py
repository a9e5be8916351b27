"""The loss registry (fastreid_ext/modeling/losses): FastReID adapters against FastReID's own functions,
the project's losses against hand-computed values, unknown names, FastReID's Baseline through compat
P17, and a user's own loss registered from the user's package and selected by name in a YAML."""

import importlib
import math
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, build_test_losses, make_cfg

from fastreid.modeling.losses import (cross_entropy_loss, focal_loss, pairwise_circleloss, pairwise_cosface,
                                      triplet_loss)

from fastreid_ext.modeling.losses import (LOSS_REGISTRY, AttributeCrossEntropyLoss, KeypointMSELoss, ReidLoss,
                                          SoftCrossEntropyLoss, SoftTripletLoss, UncertaintyLoss, build_loss,
                                          build_losses, registered_losses)

SMALL = ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.PRETRAIN", "False"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _call(loss, **tensors):
    """A registered loss called the way models call it: by the names in ``loss.inputs``."""
    return loss(**{name: tensors[name] for name in loss.inputs})


def _random_batch(b=8, num_classes=6, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"logits": torch.randn(b, num_classes, generator=g) * 2,
            # small features: every triplet / pair term is active, so margins and gammas change the value
            "features": torch.randn(b, dim, generator=g) * 0.3,
            "targets": torch.arange(b) // 2}


# --------------------------------------------------------------------------- FastReID adapters
#: (registry name, config overrides, key, inputs, FastReID's value, FastReID's value with FastReID's default settings)
ADAPTERS = {
    "ce_label_smoothing": (
        "CrossEntropyLoss",
        ["MODEL.LOSSES.CE.EPSILON", "0.1", "MODEL.LOSSES.CE.ALPHA", "0.3", "MODEL.LOSSES.CE.SCALE", "0.7"],
        "cls", ("logits", "targets"),
        lambda t: cross_entropy_loss(t["logits"], t["targets"], 0.1, 0.3) * 0.7,
        lambda t: cross_entropy_loss(t["logits"], t["targets"], 0.0, 0.2)),
    "ce_adaptive_smoothing": (
        "CrossEntropyLoss",
        ["MODEL.LOSSES.CE.EPSILON", "-1.0", "MODEL.LOSSES.CE.ALPHA", "0.3", "MODEL.LOSSES.CE.SCALE", "1.5"],
        "cls", ("logits", "targets"),
        lambda t: cross_entropy_loss(t["logits"], t["targets"], -1.0, 0.3) * 1.5,
        lambda t: cross_entropy_loss(t["logits"], t["targets"], 0.0, 0.2)),
    "triplet_hard": (
        "TripletLoss",
        ["MODEL.LOSSES.TRI.MARGIN", "0.5", "MODEL.LOSSES.TRI.HARD_MINING", "True", "MODEL.LOSSES.TRI.SCALE", "1.3"],
        "triplet", ("features", "targets"),
        lambda t: triplet_loss(t["features"], t["targets"], 0.5, False, True) * 1.3,
        lambda t: triplet_loss(t["features"], t["targets"], 0.3, False, False)),
    "triplet_soft_margin": (
        "TripletLoss",
        ["MODEL.LOSSES.TRI.MARGIN", "0.0", "MODEL.LOSSES.TRI.HARD_MINING", "True", "MODEL.LOSSES.TRI.SCALE", "0.6"],
        "triplet", ("features", "targets"),
        lambda t: triplet_loss(t["features"], t["targets"], 0.0, False, True) * 0.6,
        lambda t: triplet_loss(t["features"], t["targets"], 0.3, False, False)),
    "triplet_weighted_cosine": (
        "TripletLoss",
        ["MODEL.LOSSES.TRI.MARGIN", "0.1", "MODEL.LOSSES.TRI.HARD_MINING", "False", "MODEL.LOSSES.TRI.NORM_FEAT",
         "True", "MODEL.LOSSES.TRI.SCALE", "2.0"],
        "triplet", ("features", "targets"),
        lambda t: triplet_loss(t["features"], t["targets"], 0.1, True, False) * 2.0,
        lambda t: triplet_loss(t["features"], t["targets"], 0.3, False, False)),
    "circle": (
        "CircleLoss",
        ["MODEL.LOSSES.CIRCLE.MARGIN", "0.35", "MODEL.LOSSES.CIRCLE.GAMMA", "32", "MODEL.LOSSES.CIRCLE.SCALE", "0.5"],
        "circle", ("features", "targets"),
        lambda t: pairwise_circleloss(t["features"], t["targets"], 0.35, 32) * 0.5,
        lambda t: pairwise_circleloss(t["features"], t["targets"], 0.25, 128)),
    "cosface": (
        "Cosface",
        ["MODEL.LOSSES.COSFACE.MARGIN", "0.4", "MODEL.LOSSES.COSFACE.GAMMA", "16", "MODEL.LOSSES.COSFACE.SCALE",
         "1.1"],
        "cosface", ("features", "targets"),
        lambda t: pairwise_cosface(t["features"], t["targets"], 0.4, 16) * 1.1,
        lambda t: pairwise_cosface(t["features"], t["targets"], 0.25, 128)),
    "focal": (
        "FocalLoss",
        ["MODEL.LOSSES.FL.ALPHA", "0.4", "MODEL.LOSSES.FL.GAMMA", "3", "MODEL.LOSSES.FL.SCALE", "3.0"],
        "focal", ("logits", "targets"),
        lambda t: focal_loss(t["logits"], t["targets"], 0.4, 3) * 3.0,
        lambda t: focal_loss(t["logits"], t["targets"], 0.25, 2.0)),
}


@pytest.mark.parametrize("case", list(ADAPTERS))
def test_fastreid_adapter_equals_fastreid_function_times_scale(case):
    name, opts, key, inputs, expected_fn, default_fn = ADAPTERS[case]
    loss = build_test_losses(name, opts=opts)[name]
    assert type(loss) is LOSS_REGISTRY.get(name)
    assert loss.key == key and tuple(loss.inputs) == inputs
    for seed in (0, 1):
        t = _random_batch(seed=seed)
        got = _call(loss, **t)
        expected = expected_fn(t)
        assert got.dim() == 0
        torch.testing.assert_close(got, expected)
        # the case discriminates: FastReID's defaults (config ignored) would give another value
        assert not math.isclose(float(expected), float(default_fn(t)), rel_tol=1e-3)


def test_adapter_gradients_reach_their_inputs():
    t = _random_batch()
    logits = t["logits"].clone().requires_grad_()
    feats = t["features"].clone().requires_grad_()
    losses = build_test_losses("CrossEntropyLoss", "TripletLoss", "CircleLoss", "Cosface", "FocalLoss")
    for name, loss in losses.items():
        logits.grad = feats.grad = None
        _call(loss, logits=logits, features=feats, targets=t["targets"]).backward()
        grad = logits.grad if "logits" in loss.inputs else feats.grad
        assert grad is not None and grad.abs().sum() > 0, name


# --------------------------------------------------------------------------- attribute cross-entropy
def _ce(z, t):
    """Softmax cross-entropy of one logit vector ``z`` and target ``t``, by hand."""
    return -z[t] + math.log(sum(math.exp(v) for v in z))


def test_attribute_loss_all_vs_labelled_by_hand():
    # 3 images, 3 heads: head 0 (2-way) has one unlabelled image, head 1 (3-way) all labelled,
    # head 2 (2-way) unlabelled in the whole batch
    z0 = [[0.5, -0.5], [1.0, 2.0], [0.0, 0.3]]
    z1 = [[0.2, 0.1, -1.0], [0.0, 1.5, 0.5], [2.0, -1.0, 0.0]]
    z2 = [[3.0, -3.0], [0.1, 0.2], [-1.0, 1.0]]
    targets = torch.tensor([[1, 2, -1], [-1, 1, -1], [0, 0, -1]])
    h0 = (_ce(z0[0], 1) + _ce(z0[2], 0)) / 2  # mean over its 2 labelled images
    h1 = (_ce(z1[0], 2) + _ce(z1[1], 1) + _ce(z1[2], 0)) / 3
    scale = 0.5
    cfg = make_cfg(None, ["MODEL.LOSSES.ATTR.SCALE", str(scale)])

    def logits():
        return [torch.tensor(z, requires_grad=True) for z in (z0, z1, z2)]

    all_loss = build_loss(cfg, "AttributeCrossEntropyLoss", average="all")
    lab_loss = build_loss(cfg, "AttributeCrossEntropyLoss", average="labelled")
    assert isinstance(all_loss, AttributeCrossEntropyLoss) and all_loss.key == "attr"
    assert tuple(all_loss.inputs) == ("attr_logits", "attr_targets")

    lg = logits()
    v_all = _call(all_loss, attr_logits=lg, attr_targets=targets)
    assert v_all.item() == pytest.approx((h0 + h1 + 0.0) / 3 * scale, rel=1e-6)  # APR: 1/M over ALL heads

    lg = logits()
    v_lab = _call(lab_loss, attr_logits=lg, attr_targets=targets)
    assert v_lab.item() == pytest.approx((h0 + h1) / 2 * scale, rel=1e-6)  # AANet: over labelled heads only
    assert v_all.item() != pytest.approx(v_lab.item(), rel=1e-3)
    v_lab.backward()
    assert lg[2].grad is not None, "the unlabelled head must stay in the graph (DDP)"
    assert torch.equal(lg[2].grad, torch.zeros(3, 2))
    assert lg[0].grad[1].abs().sum() == 0 and lg[0].grad[0].abs().sum() > 0  # ignored image: no gradient

    # every head labelled: the two averages agree
    full = torch.tensor([[1, 2, 0], [0, 1, 1], [0, 0, 1]])
    torch.testing.assert_close(_call(all_loss, attr_logits=logits(), attr_targets=full),
                               _call(lab_loss, attr_logits=logits(), attr_targets=full))


# --------------------------------------------------------------------------- keypoint MSE
def test_keypoint_mse_by_hand_masks_invisible_joints():
    # B=1, 3 joints, 1x2 heatmaps; joint 1 is invisible (v=0) with a huge error
    pred = torch.tensor([[[[1.0, 2.0]], [[100.0, -50.0]], [[0.5, 0.0]]]], requires_grad=True)
    target = torch.tensor([[[[0.0, 0.0]], [[0.0, 0.0]], [[0.0, 1.0]]]])
    kps = torch.tensor([[[10.0, 20.0, 2.0], [5.0, 5.0, 0.0], [1.0, 1.0, 1.0]]])
    scale = 2.0
    loss = build_loss(make_cfg(None, ["MODEL.LOSSES.MSE.SCALE", str(scale)]), "KeypointMSELoss")
    assert isinstance(loss, KeypointMSELoss) and loss.key == "mse"
    assert tuple(loss.inputs) == ("pred_heatmaps", "heatmaps", "keypoints")
    v = _call(loss, pred_heatmaps=pred, heatmaps=target, keypoints=kps)
    # visible joints: (1 + 4) + (0.25 + 1); the denominator counts every element (1 * 3 * 1 * 2)
    assert v.item() == pytest.approx((1 + 4 + 0.25 + 1) / 6 * scale, rel=1e-6)
    unmasked = ((pred - target) ** 2).mean().item() * scale
    assert v.item() != pytest.approx(unmasked, rel=1e-3)  # an unmasked loss would be ~4000x larger
    v.backward()
    assert pred.grad[0, 1].abs().sum() == 0 and pred.grad[0, 0].abs().sum() > 0
    # the invisible joint's prediction does not change the value
    other = pred.detach().clone()
    other[0, 1] = torch.tensor([[7.0, 7.0]])
    assert _call(loss, pred_heatmaps=other, heatmaps=target, keypoints=kps).item() == pytest.approx(v.item())


# --------------------------------------------------------------------------- MMT soft losses
def _softmax(z):
    e = [math.exp(v) for v in z]
    return [x / sum(e) for x in e]


def test_soft_cross_entropy_by_hand_and_teacher_detached():
    s = [[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]]
    t = [[2.0, 1.0, 0.0], [-1.0, 0.0, 1.0]]
    scale = 0.3
    loss = build_loss(make_cfg(None, ["MODEL.LOSSES.SOFT_CE.SCALE", str(scale)]), "SoftCrossEntropyLoss")
    assert isinstance(loss, SoftCrossEntropyLoss) and tuple(loss.inputs) == ("logits", "teacher_logits")
    expected = sum(-sum(p * math.log(q) for p, q in zip(_softmax(ti), _softmax(si))) for si, ti in zip(s, t)) / 2
    student = torch.tensor(s, requires_grad=True)
    teacher = torch.tensor(t, requires_grad=True)
    v = _call(loss, logits=student, teacher_logits=teacher)
    assert v.item() == pytest.approx(expected * scale, rel=1e-6)
    v.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None, "the teacher's logits must be detached"
    # d/dz of -sum p log softmax(z) = softmax(z) - p, averaged over the 2 rows
    grad = [[(q - p) * scale / 2 for p, q in zip(_softmax(ti), _softmax(si))] for si, ti in zip(s, t)]
    torch.testing.assert_close(student.grad, torch.tensor(grad))


def _soft_triplet_by_hand(student, teacher, ids, mine_on):
    """MMT soft triplet on 1-d features: pairs mined on ``mine_on``'s distances."""
    n = len(ids)
    total = 0.0
    for i in range(n):
        pos = [j for j in range(n) if ids[j] == ids[i]]
        neg = [j for j in range(n) if ids[j] != ids[i]]
        p = max(pos, key=lambda j: abs(mine_on[i] - mine_on[j]))
        q = min(neg, key=lambda j: abs(mine_on[i] - mine_on[j]))
        log_p = [math.log(x) for x in _softmax([abs(student[i] - student[p]), abs(student[i] - student[q])])]
        target = _softmax([abs(teacher[i] - teacher[p]), abs(teacher[i] - teacher[q])])
        total += -(target[0] * log_p[0] + target[1] * log_p[1])
    return total / n


def test_soft_triplet_mines_on_the_student_by_hand():
    ids = [0, 0, 1, 1]
    student = [0.0, 1.0, 3.0, 5.0]
    # student's hardest negatives: 0->2, 1->2, 2->1, 3->1; the teacher's own would be 0->3, 1->3, 2->0, 3->1
    teacher = [0.0, 2.0, 5.0, 1.0]
    scale = 1.7
    loss = build_loss(make_cfg(None, ["MODEL.LOSSES.SOFT_TRI.SCALE", str(scale)]), "SoftTripletLoss")
    assert isinstance(loss, SoftTripletLoss)
    assert tuple(loss.inputs) == ("features", "targets", "teacher_features")
    expected = _soft_triplet_by_hand(student, teacher, ids, mine_on=student)
    mined_on_teacher = _soft_triplet_by_hand(student, teacher, ids, mine_on=teacher)
    assert abs(expected - mined_on_teacher) > 1e-2  # the case tells the two mining rules apart
    s = torch.tensor(student).view(4, 1).requires_grad_()
    t = torch.tensor(teacher).view(4, 1).requires_grad_()
    v = _call(loss, features=s, targets=torch.tensor(ids), teacher_features=t)
    assert v.item() == pytest.approx(expected * scale, rel=1e-5)
    v.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None, "the teacher's features must be detached"


def test_soft_triplet_norm_feat_normalises_both():
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    ids = torch.tensor([0, 0, 1, 1, 2, 2])
    cfg = make_cfg(None, ["MODEL.LOSSES.SOFT_TRI.NORM_FEAT", "True"])
    normed = build_loss(cfg, "SoftTripletLoss")
    plain = SoftTripletLoss(norm_feat=False)
    torch.testing.assert_close(_call(normed, features=s, targets=ids, teacher_features=t),
                               _call(plain, features=F.normalize(s, dim=1), targets=ids,
                                     teacher_features=F.normalize(t, dim=1)))
    # scaling the raw features changes nothing after normalisation
    torch.testing.assert_close(_call(normed, features=3 * s, targets=ids, teacher_features=0.5 * t),
                               _call(normed, features=s, targets=ids, teacher_features=t))


# --------------------------------------------------------------------------- uncertainty, names
def test_uncertainty_loss_builds_from_the_registry():
    cfg = make_cfg(None)
    unc = build_loss(cfg, "UncertaintyLoss", tasks=["global_id", "attr"])
    assert isinstance(unc, UncertaintyLoss) and unc.tasks == ["global_id", "attr"]
    assert unc.log_vars.shape == (2,) and unc.log_vars.requires_grad
    out = unc({"global_id": torch.tensor(1.0), "attr": torch.tensor(2.0)})
    assert set(out) == {"global_id", "attr"}
    plain = build_loss(cfg, "UncertaintyLoss", tasks=["a"], enabled=False)
    assert list(plain.parameters()) == []


def test_registry_lists_every_project_loss():
    assert {"CrossEntropyLoss", "TripletLoss", "CircleLoss", "Cosface", "FocalLoss", "AttributeCrossEntropyLoss",
            "KeypointMSELoss", "SoftCrossEntropyLoss", "SoftTripletLoss", "UncertaintyLoss"} <= set(registered_losses())


def _assert_lists_registered(message):
    for name in registered_losses():
        assert name in message, f"{name} missing from: {message}"


def test_unknown_loss_name_is_an_error_listing_the_registered_losses():
    from fastreid_ext.config import get_ext_cfg, merge_checked, validate_config

    opts = ["MODEL.LOSSES.NAME", '("CrossEntropyLoss", "NoSuchLoss")']
    with pytest.raises(ValueError, match="NoSuchLoss") as e:
        merge_checked(get_ext_cfg(), "", opts)
    _assert_lists_registered(str(e.value))

    cfg = get_ext_cfg()
    cfg.MODEL.LOSSES.NAME = ("CrossEntropyLoss", "NoSuchLoss")
    with pytest.raises(ValueError, match="NoSuchLoss") as e:
        validate_config(cfg)
    _assert_lists_registered(str(e.value))
    with pytest.raises(KeyError, match="NoSuchLoss") as e:
        build_losses(cfg)
    _assert_lists_registered(str(e.value))
    with pytest.raises(KeyError, match="NoSuchLoss"):
        build_loss(cfg, "NoSuchLoss")
    # from a YAML too
    with pytest.raises(ValueError, match="NoSuchLoss"):
        make_cfg("configs/Synthetic/bagtricks_R18.yml", opts)


# --------------------------------------------------------------------------- FastReID's Baseline (P17)
def _stock_baseline_losses(outputs, gt_labels, loss_kwargs):
    """fastreid/modeling/meta_arch/baseline.py ``Baseline.losses`` of FastReID 1.4.0, as written there."""
    cls_outputs, pred_features = outputs["cls_outputs"], outputs["features"]
    loss_dict = {}
    loss_names = loss_kwargs["loss_names"]
    if "CrossEntropyLoss" in loss_names:
        ce = loss_kwargs.get("ce")
        loss_dict["loss_cls"] = cross_entropy_loss(cls_outputs, gt_labels, ce.get("eps"), ce.get("alpha")) * ce.get(
            "scale")
    if "TripletLoss" in loss_names:
        tri = loss_kwargs.get("tri")
        loss_dict["loss_triplet"] = triplet_loss(pred_features, gt_labels, tri.get("margin"), tri.get("norm_feat"),
                                                 tri.get("hard_mining")) * tri.get("scale")
    if "CircleLoss" in loss_names:
        c = loss_kwargs.get("circle")
        loss_dict["loss_circle"] = pairwise_circleloss(pred_features, gt_labels, c.get("margin"),
                                                       c.get("gamma")) * c.get("scale")
    if "Cosface" in loss_names:
        c = loss_kwargs.get("cosface")
        loss_dict["loss_cosface"] = pairwise_cosface(pred_features, gt_labels, c.get("margin"),
                                                     c.get("gamma")) * c.get("scale")
    return loss_dict


def _fixed_batch(b=8, h=64, w=32, num_ids=4):
    g = torch.Generator().manual_seed(0)
    return {"images": torch.rand(b, 3, h, w, generator=g) * 255, "targets": torch.arange(b) % num_ids}


def _train_forward(model, batch, hook_module):
    """Training forward inside an event storage; also returns what ``hook_module`` output."""
    from fastreid.utils.events import EventStorage

    seen = {}
    handle = hook_module.register_forward_hook(lambda m, i, o: seen.update(out=o))
    try:
        model.train()
        with EventStorage(0):
            losses = model(batch)
    finally:
        handle.remove()
    return losses, seen["out"]


#: non-default loss settings, so that a loss built from FastReID's defaults would give other values
BAGTRICKS_LOSS_OPTS = ["MODEL.LOSSES.CE.EPSILON", "0.2", "MODEL.LOSSES.CE.SCALE", "0.7",
                       "MODEL.LOSSES.TRI.MARGIN", "0.5", "MODEL.LOSSES.TRI.SCALE", "1.3",
                       "MODEL.LOSSES.CIRCLE.MARGIN", "0.3", "MODEL.LOSSES.CIRCLE.GAMMA", "32",
                       "MODEL.LOSSES.CIRCLE.SCALE", "0.5",
                       "MODEL.LOSSES.COSFACE.MARGIN", "0.35", "MODEL.LOSSES.COSFACE.GAMMA", "16",
                       "MODEL.LOSSES.COSFACE.SCALE", "1.2",
                       "MODEL.LOSSES.FL.ALPHA", "0.4", "MODEL.LOSSES.FL.GAMMA", "3", "MODEL.LOSSES.FL.SCALE", "3.0"]


@pytest.mark.parametrize("names,keys", [
    (("CrossEntropyLoss", "TripletLoss"), {"loss_cls", "loss_triplet"}),
    (("CrossEntropyLoss", "CircleLoss", "Cosface"), {"loss_cls", "loss_circle", "loss_cosface"}),
    (("CrossEntropyLoss", "TripletLoss", "FocalLoss"), {"loss_cls", "loss_triplet", "loss_focal"}),
])
def test_baseline_losses_come_from_the_registry_with_fastreid_values(names, keys):
    from fastreid.modeling import build_model
    from fastreid.modeling.meta_arch.baseline import Baseline

    cfg = make_cfg("configs/Synthetic/bagtricks_R18.yml",
                   SMALL + ["MODEL.HEADS.NUM_CLASSES", "4", "MODEL.LOSSES.NAME", repr(names)] + BAGTRICKS_LOSS_OPTS)
    torch.manual_seed(0)
    model = build_model(cfg)
    assert type(model) is Baseline and list(model.loss_fns) == list(names)
    batch = _fixed_batch()
    losses, outputs = _train_forward(model, batch, model.heads)
    assert set(losses) == keys
    expected = _stock_baseline_losses(outputs, batch["targets"], model.loss_kwargs)
    if "FocalLoss" in names:  # stock FastReID silently ignored it
        fl = cfg.MODEL.LOSSES.FL
        expected["loss_focal"] = focal_loss(outputs["cls_outputs"], batch["targets"], fl.ALPHA, fl.GAMMA) * fl.SCALE
    assert set(expected) == keys
    for k in keys:
        torch.testing.assert_close(losses[k], expected[k], msg=k)
        assert losses[k].item() > 0, k
    # the scale and smoothing of the config are in the values (not FastReID's defaults)
    default_ce = cross_entropy_loss(outputs["cls_outputs"], batch["targets"], 0.0, 0.2)
    assert not math.isclose(losses["loss_cls"].item(), default_ce.item(), rel_tol=1e-3)
    sum(losses.values()).backward()
    assert model.backbone.conv1.weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------- a user's own loss
USER_PACKAGE = "my_reid_losses_for_test"
USER_LOSSES = ("FeatureNormLoss", "HeatmapReaderLoss")


@pytest.fixture
def user_losses(tmp_path, monkeypatch):
    """The user's package, in tmp_path (not in the project), registering two losses on import."""
    pkg = tmp_path / USER_PACKAGE
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        from fastreid_ext.modeling.losses import LOSS_REGISTRY, ReidLoss


        @LOSS_REGISTRY.register()
        class FeatureNormLoss(ReidLoss):
            """Mean L2 norm of the features."""
            inputs = ("features", "targets")
            key = "fnorm"

            def __init__(self, cfg):
                super().__init__()

            def forward(self, features, targets):
                return features.norm(dim=1).mean()


        @LOSS_REGISTRY.register()
        class HeatmapReaderLoss(ReidLoss):
            """Reads a tensor that no re-id model without a keypoint decoder provides."""
            inputs = ("pred_heatmaps",)
            key = "hm"

            def __init__(self, cfg):
                super().__init__()

            def forward(self, pred_heatmaps):
                return pred_heatmaps.mean()
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        mod = importlib.import_module(USER_PACKAGE)
        yield mod
    finally:
        for name in USER_LOSSES:
            LOSS_REGISTRY._obj_map.pop(name, None)
        sys.modules.pop(USER_PACKAGE, None)


def _user_cfg(tmp_path, base, names, opts=()):
    """A user's YAML in tmp_path (``_BASE_`` = one of the project's configs), loaded like make_cfg."""
    from fastreid_ext.config import get_ext_cfg, merge_checked

    yaml = tmp_path / f"user_{base.replace('/', '_')}_{len(names)}.yml"
    yaml.write_text(f"_BASE_: {REPO / base}\nMODEL:\n  LOSSES:\n    NAME: {names!r}\n")
    cfg = get_ext_cfg()
    merge_checked(cfg, str(yaml), SMALL + list(opts))
    return cfg


def test_user_registered_loss_selected_by_name_in_a_yaml(user_losses, tmp_path):
    from fastreid.modeling import build_model

    from fastreid_ext.modeling.meta_arch.hacnn import HACNNReID

    assert "FeatureNormLoss" in registered_losses()
    assert issubclass(user_losses.FeatureNormLoss, ReidLoss)

    # HA-CNN (configs/Synthetic/hacnn.yml): the loss on both branches
    cfg = _user_cfg(tmp_path, "configs/Synthetic/hacnn.yml", ("CrossEntropyLoss", "FeatureNormLoss"),
                    ["MODEL.HEADS.NUM_CLASSES", "4"])
    torch.manual_seed(0)
    model = build_model(cfg)
    assert isinstance(model, HACNNReID)
    batch = _fixed_batch(b=4, h=160, w=64, num_ids=2)
    losses, feats = _train_forward(model, batch, model.backbone)
    assert set(losses) == {"loss_cls_global", "loss_cls_local", "loss_fnorm_global", "loss_fnorm_local"}
    for branch in ("global", "local"):
        torch.testing.assert_close(losses[f"loss_fnorm_{branch}"], feats[branch].norm(dim=1).mean())
    assert losses["loss_fnorm_global"].item() != pytest.approx(losses["loss_fnorm_local"].item(), rel=1e-4)
    logits = model.classifier_global(feats["global"])
    torch.testing.assert_close(losses["loss_cls_global"], cross_entropy_loss(logits, batch["targets"], 0.0, 0.2))

    # FastReID's Baseline (configs/Synthetic/bagtricks_R18.yml) through P17
    cfg = _user_cfg(tmp_path, "configs/Synthetic/bagtricks_R18.yml",
                    ("CrossEntropyLoss", "TripletLoss", "FeatureNormLoss"), ["MODEL.HEADS.NUM_CLASSES", "4"])
    torch.manual_seed(0)
    model = build_model(cfg)
    batch = _fixed_batch()
    losses, outputs = _train_forward(model, batch, model.heads)
    assert set(losses) == {"loss_cls", "loss_triplet", "loss_fnorm"}
    torch.testing.assert_close(losses["loss_fnorm"], outputs["features"].norm(dim=1).mean())
    expected = _stock_baseline_losses(outputs, batch["targets"], model.loss_kwargs)
    for k in ("loss_cls", "loss_triplet"):
        torch.testing.assert_close(losses[k], expected[k])


@pytest.mark.parametrize("base,model_name,opts", [
    ("configs/Synthetic/hacnn.yml", "HACNNReID", []),
    ("configs/Synthetic/bagtricks_R18.yml", "Baseline", []),
    ("configs/Synthetic/apr_R18.yml", "APR", ["MODEL.ATTRIBUTES.FIELDS", '["age", "gender"]']),
])
def test_user_loss_reading_a_missing_tensor_is_refused_at_build_time(user_losses, tmp_path, base, model_name,
                                                                     opts):
    from fastreid.modeling import build_model

    cfg = _user_cfg(tmp_path, base, ("CrossEntropyLoss", "HeatmapReaderLoss"),
                    ["MODEL.HEADS.NUM_CLASSES", "4"] + opts)
    with pytest.raises(ValueError) as e:
        build_model(cfg)
    msg = str(e.value)
    assert "pred_heatmaps" in msg and "HeatmapReaderLoss" in msg and model_name in msg, msg


def test_user_losses_are_unregistered_after_the_test():
    assert not set(USER_LOSSES) & set(registered_losses())
    assert USER_PACKAGE not in sys.modules
