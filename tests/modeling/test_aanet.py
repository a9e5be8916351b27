"""AANet (fastreid_ext/modeling/meta_arch/aanet.py): uncertainty loss maths, PFN part localisation,
AFN regions and the Attribute Attention Map, gradients, event-storage logging, eval outputs, configs,
ResNet-152, and a few-iteration training + evaluation through ExtTrainer."""

import json
import math

import pytest
import torch

from conftest import ATTRIBUTES, build_test_losses, logged_losses, make_cfg, random_feature_metrics, train

import fastreid_ext.modeling.meta_arch.aanet as aanet  # importing registers AANet and its backbone
from fastreid_ext.data.attributes import AttributeSchema
from fastreid_ext.data.synthetic import DUKE_ATTRIBUTES, MARKET_ATTRIBUTES
from fastreid_ext.modeling.losses import UncertaintyLoss
from fastreid_ext.modeling.meta_arch.aanet import (
    AANet, AFN, attribute_region, locate_parts, merge_and_threshold, region_rows)

AANET_CONFIGS = ["configs/Base-AANet.yml", "configs/Market1501/aanet_R50.yml",
                 "configs/Market1501/aanet_R152.yml", "configs/DukeMTMC/aanet_R50.yml",
                 "configs/DukeMTMC/aanet_R152.yml", "configs/Synthetic/aanet_R18.yml",
                 "configs/MiniMarket/aanet_R18.yml"]
#: small and fast model settings for unit tests (ResNet-18, random init, 96x32 -> 6x2 map)
SMALL = ["MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512", "MODEL.BACKBONE.PRETRAIN", "False",
         "MODEL.HEADS.NUM_CLASSES", "5", "MODEL.AANET.REDUCTION_DIM", "32",
         "MODEL.ATTRIBUTES.FIELDS", str(list(MARKET_ATTRIBUTES)), "MODEL.DEVICE", "cpu"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(opts=(), config="configs/Synthetic/aanet_R18.yml"):
    from fastreid.modeling import build_model

    torch.manual_seed(0)
    return build_model(make_cfg(config, SMALL + list(opts)))


def _batch(b=6, h=96, w=32, seed=0):
    """A training batch with Market attributes: binary fields random, colours one-hot per group."""
    g = torch.Generator().manual_seed(seed)
    fields = list(MARKET_ATTRIBUTES)
    attrs = torch.randint(0, 2, (b, len(fields)), generator=g)
    for prefix in ("up", "down"):
        cols = [i for i, f in enumerate(fields) if f.startswith(prefix) and f != prefix]
        attrs[:, cols] = 0
        attrs[torch.arange(b), torch.tensor(cols)[torch.randint(0, len(cols), (b,), generator=g)]] = 1
    attrs[0, fields.index("age")] = 3  # age is 4-way
    attrs[1, fields.index("hat")] = -1  # one unlabelled field
    return {"images": torch.rand(b, 3, h, w, generator=g) * 255, "targets": torch.arange(b) % 5,
            "camids": torch.zeros(b, dtype=torch.long), "img_paths": [f"{i}.jpg" for i in range(b)],
            "attributes": attrs}


# --------------------------------------------------------------------------- uncertainty loss
def test_uncertainty_loss_value_and_gradient_match_hand_computation():
    unc = UncertaintyLoss(["a", "b"])
    with torch.no_grad():
        unc.log_vars.copy_(torch.tensor([0.3, -0.7]))
    la = torch.tensor(2.0, requires_grad=True)
    lb = torch.tensor(0.5, requires_grad=True)
    out = unc({"a": la, "b": lb})
    total = sum(out.values())
    total.backward()
    for name, L, s, l_t in (("a", 2.0, 0.3, la), ("b", 0.5, -0.7, lb)):
        sigma2 = math.exp(s)
        # L / (2 sigma^2) + log sigma, with s = log sigma^2
        assert out[name].item() == pytest.approx(L / (2 * sigma2) + math.log(math.sqrt(sigma2)), rel=1e-6)
        assert l_t.grad.item() == pytest.approx(1 / (2 * sigma2), rel=1e-6)  # d/dL
    ds = [-0.5 * math.exp(-0.3) * 2.0 + 0.5, -0.5 * math.exp(0.7) * 0.5 + 0.5]  # d/ds_i
    assert unc.log_vars.grad.tolist() == pytest.approx(ds, rel=1e-6)


def test_uncertainty_optimum_is_log_of_the_loss():
    losses = {"a": torch.tensor(3.0), "b": torch.tensor(0.2)}
    unc = UncertaintyLoss(["a", "b"])
    with torch.no_grad():
        unc.log_vars.copy_(torch.log(torch.tensor([3.0, 0.2])))
    sum(unc(losses).values()).backward()
    assert unc.log_vars.grad.abs().max().item() < 1e-6  # stationary point
    for delta in (-0.1, 0.1):  # and a minimum
        other = UncertaintyLoss(["a", "b"])
        with torch.no_grad():
            other.log_vars.copy_(torch.log(torch.tensor([3.0, 0.2])) + delta)
        assert sum(other(losses).values()) > sum(unc(losses).values())


def test_uncertainty_disabled_is_plain_sum_and_unknown_task_raises():
    unc = UncertaintyLoss(["a", "b"], enabled=False)
    assert list(unc.parameters()) == []
    losses = {"a": torch.tensor(1.5), "b": torch.tensor(0.25)}
    assert unc(losses) == losses
    with pytest.raises(KeyError, match="unknown task"):
        UncertaintyLoss(["a"])({"c": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="duplicate"):
        UncertaintyLoss(["a", "a"])


# --------------------------------------------------------------------------- PFN localisation
def _body_map(rows, b=1, c=64, h=24, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(b, c, h, w)
    x[:, :, rows[0]:rows[1] + 1] = torch.rand(b, c, rows[1] + 1 - rows[0], w, generator=g) + 0.5
    return x


def test_pfn_parts_follow_the_body_not_a_fixed_split():
    x = torch.cat([_body_map((6, 17)), torch.ones(1, 64, 24, 8)])  # body on rows 6..17; a flat full map
    bounds, weights = locate_parts(x, 6)
    assert bounds[0].tolist() == pytest.approx([6, 8, 10, 12, 14, 16, 18])  # 2 rows per part in 6..17
    assert weights[0, :, :6].abs().sum() == 0 and weights[0, :, 18:].abs().sum() == 0
    assert torch.allclose(weights.sum(-1), torch.ones(2, 6))
    for k in range(6):  # part k pools exactly rows 6+2k, 7+2k
        assert weights[0, k].nonzero().flatten().tolist() == [6 + 2 * k, 7 + 2 * k]
    # a fixed split would have been 0, 4, ..., 24 (what the second, full-body image gets)
    assert bounds[1].tolist() == pytest.approx([0, 4, 8, 12, 16, 20, 24])


def test_pfn_localisation_edge_cases():
    # no evidence (all-zero map): the fixed split
    bounds, _ = locate_parts(torch.zeros(1, 8, 24, 8), 6)
    assert bounds[0].tolist() == pytest.approx([0, 4, 8, 12, 16, 20, 24])
    # a body of 2 rows is widened to 6 rows around it, at the border kept inside the map
    bounds, weights = locate_parts(torch.cat([_body_map((10, 11)), _body_map((0, 1))]), 6)
    assert bounds[0].tolist() == pytest.approx([8, 9, 10, 11, 12, 13, 14])
    assert bounds[1].tolist() == pytest.approx([0, 1, 2, 3, 4, 5, 6])
    # fractional bins (map shorter than the parts): exact area weights, each part sums to 1
    bounds, weights = locate_parts(torch.rand(1, 8, 4, 2) + 0.5, 6)
    assert bounds[0, -1].item() == pytest.approx(4) and torch.allclose(weights.sum(-1), torch.ones(1, 6))
    assert weights[0, 1].tolist() == pytest.approx([0.5, 0.5, 0, 0])  # rows [2/3, 4/3)


def test_pfn_part_features_ignore_rows_outside_the_body():
    model = _model().eval()
    x = _body_map((6, 17), c=512)
    y = x.clone()
    y[:, :, 20, :] = 1e-3  # faint activity below the body: below the adaptive threshold
    f1, _, b1 = model.pfn(x)
    f2, _, b2 = model.pfn(y)
    assert torch.equal(b1, b2)
    for a, b in zip(f1, f2):
        assert torch.allclose(a, b)


# --------------------------------------------------------------------------- AFN regions and AAM
def test_attribute_region_table():
    assert [attribute_region(n) for n in ("hat", "hair")] == ["top", "top"]
    assert [attribute_region(n) for n in ("up", "upblack", "backpack", "top")] == ["middle"] * 4
    assert [attribute_region(n) for n in ("down", "downpink", "clothes", "boots", "shoes")] == ["bottom"] * 5
    assert [attribute_region(n) for n in ("gender", "age", "bag", "handbag", "unknown_thing")] == ["global"] * 5
    # colour-group heads of the grouped schema
    schema = AttributeSchema(MARKET_ATTRIBUTES, group_colours=True)
    regions = {h.name: attribute_region(h.name, h.fields) for h in schema.heads}
    assert regions["upcolor"] == "middle" and regions["downcolor"] == "bottom"
    assert attribute_region("mycolour", ("upred", "upblue")) == "middle"
    # every Market / Duke field is in the explicit table
    assert set(MARKET_ATTRIBUTES) | set(DUKE_ATTRIBUTES) <= set(aanet.ATTRIBUTE_REGIONS)
    assert [region_rows(r, 24) for r in aanet.REGIONS] == [(0, 8), (8, 16), (16, 24), (0, 24)]


@pytest.mark.skipif(not (ATTRIBUTES / "market_attribute.mat").is_file(), reason="no real attribute files")
def test_real_attribute_files_fields_are_all_mapped():
    from fastreid_ext.data.attributes import load_attribute_mat

    for f in ("market_attribute.mat", "duke_attribute.mat"):
        assert set(load_attribute_mat(str(ATTRIBUTES / f)).names) <= set(aanet.ATTRIBUTE_REGIONS), f


def test_merge_and_threshold_by_hand():
    cams = torch.tensor([[[[0.2, 0.0], [0.0, 0.0]], [[0.0, 0.9], [0.1, 0.0]]]])
    # max -> [[.2, .9], [.1, 0]], mean .3 -> only .9 survives
    assert torch.allclose(merge_and_threshold(cams), torch.tensor([[[0.0, 0.9], [0.0, 0.0]]]))
    assert merge_and_threshold(torch.zeros(2, 0, 3, 3)).shape == (2, 3, 3)


def test_aam_shape_range_and_zero_on_background():
    torch.manual_seed(0)
    schema = AttributeSchema(MARKET_ATTRIBUTES, group_colours=True)
    afn = AFN(64, 16, [(h.name, h.num_classes, h.fields) for h in schema.heads]).eval()
    x = torch.zeros(2, 64, 24, 8)
    x[:, :, 3:21, 2:6] = torch.rand(2, 64, 18, 4) + 0.2  # the person; zero background
    logits, aam = afn(x)
    assert aam.shape == (2, 24, 8) and not aam.requires_grad
    assert aam.min() >= 0 and aam.max() <= 1
    assert torch.allclose(aam.amax(dim=(1, 2)), torch.ones(2))
    fg = torch.zeros(24, 8, dtype=torch.bool)
    fg[3:21, 2:6] = True
    assert aam[:, ~fg].abs().max() == 0  # background removed
    assert (aam[:, fg] > 0).float().mean() > 0.2
    assert [lg.shape for lg in logits] == [(2, k) for k in schema.num_classes]


# --------------------------------------------------------------------------- the model
def test_gradients_reach_every_subnetwork():
    model = _model().train()
    losses = model(_batch())
    assert set(losses) == {"loss_global_id", "loss_part_id", "loss_attr"}
    sum(losses.values()).backward()

    def has_grad(p):
        return p.grad is not None and p.grad.abs().sum() > 0

    assert has_grad(model.backbone.conv1.weight) and has_grad(model.backbone.layer4[-1].conv2.weight)
    assert has_grad(model.gfn.reduction[0].weight) and has_grad(model.gfn.classifier.weight)
    assert all(has_grad(r[0].weight) for r in model.pfn.reductions)
    assert all(has_grad(c.weight) for c in model.pfn.classifiers)
    assert has_grad(model.afn.reduction[0].weight)
    assert all(has_grad(c.weight) for c in model.afn.classifiers)
    assert model.uncertainty.log_vars.grad is not None and (model.uncertainty.log_vars.grad != 0).all()


def test_log_variances_are_logged_to_the_event_storage():
    from fastreid.utils.events import EventStorage

    model = _model(["MODEL.LOSSES.NAME", '("CrossEntropyLoss", "TripletLoss")']).train()
    with torch.no_grad():
        model.uncertainty.log_vars.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    with EventStorage(0) as storage:
        losses = model(_batch())
        hist = storage.histories()
    assert set(losses) == {"loss_global_id", "loss_part_id", "loss_attr", "loss_triplet"}
    assert all(k.startswith("loss_") and v.dim() == 0 and v.requires_grad for k, v in losses.items())
    for task, s in zip(("global_id", "part_id", "attr", "triplet"), (0.1, 0.2, 0.3, 0.4)):
        assert hist[f"aanet/log_var_{task}"].latest() == pytest.approx(s, abs=1e-6)
        assert hist[f"aanet/sigma_{task}"].latest() == pytest.approx(math.exp(s / 2), rel=1e-5)
        raw = hist[f"aanet/raw_{task}"].latest()  # the returned term is the weighted raw loss
        assert losses[f"loss_{task}"].item() == pytest.approx(0.5 * math.exp(-s) * raw + 0.5 * s, rel=1e-4)
    assert "cls_accuracy" in hist


def test_without_uncertainty_the_losses_are_the_plain_task_losses():
    model = _model(["MODEL.AANET.UNCERTAINTY", "False"]).train()
    assert not any("log_vars" in n for n, _ in model.named_parameters())
    batch = _batch()
    losses = model(batch)
    out = model.extract(model.preprocess_image(batch))
    raw = model.task_losses(out, batch["targets"], model.schema.targets(batch["attributes"]))
    for task, v in raw.items():
        assert losses[f"loss_{task}"].item() == pytest.approx(v.item(), rel=1e-4)


def test_unlabelled_attributes_are_ignored():
    model = _model(["MODEL.AANET.UNCERTAINTY", "False"]).train()
    batch = _batch()
    batch["attributes"][:] = -1  # nothing labelled
    losses = model(batch)
    assert losses["loss_attr"].item() == 0 and losses["loss_attr"].requires_grad
    sum(losses.values()).backward()
    assert all(c.weight.grad is not None and c.weight.grad.abs().sum() == 0 for c in model.afn.classifiers)
    # one head unlabelled: the mean runs over the labelled heads only
    batch = _batch()
    batch["attributes"][:, list(MARKET_ATTRIBUTES).index("gender")] = -1
    out = model.extract(model.preprocess_image(batch))
    targets = model.schema.targets(batch["attributes"])
    j = model.schema.names.index("gender")
    expect = torch.stack([torch.nn.functional.cross_entropy(lg, targets[:, i], ignore_index=-1)
                          for i, lg in enumerate(out["attr_logits"]) if i != j]).mean()
    assert model.task_losses(out, batch["targets"], targets)["attr"].item() == pytest.approx(expect.item())


def test_eval_outputs():
    model = _model().eval()
    batch = _batch(b=3)
    images = batch["images"].clone()
    with torch.no_grad():
        feat = model(batch)
        out = model.inference(batch)
    assert torch.equal(batch["images"], images)  # normalised out of place
    assert isinstance(feat, torch.Tensor) and torch.equal(feat, out["features"])  # FastReID's eval contract
    assert set(out) == {"features", "attributes", "attention"}
    assert out["features"].shape == (3, 7 * 32) == (3, model.feat_dim)
    blocks = out["features"].view(3, 7, 32)
    assert torch.allclose(blocks.norm(dim=2), torch.ones(3, 7), atol=1e-5)  # [GFN, 6 parts], each unit norm
    assert [p.shape for p in out["attributes"]] == [(3, k) for k in model.schema.num_classes]
    assert all(torch.allclose(p.sum(1), torch.ones(3)) for p in out["attributes"])
    assert out["attention"].shape == (3, 6, 2)  # 96x32 input, last stride 1
    assert out["attention"].min() >= 0 and out["attention"].max() <= 1


def test_identity_feature_depends_on_the_attention_map():
    """The GFN feature (and so the retrieval feature) is computed on X * (1 + AAM): replacing the AAM
    by another map must change it, and the part features (computed on plain X) must not change."""
    model = _model().eval()
    batch = _batch(b=3)
    with torch.no_grad():
        ref = model.inference(batch)["features"].view(3, 7, -1)
        afn_forward = model.afn.forward

        def other_map(x):
            logits, aam = afn_forward(x)
            return logits, torch.ones_like(aam) - aam  # attention moved to the background

        model.afn.forward = other_map
        moved = model.inference(batch)["features"].view(3, 7, -1)
    assert not torch.allclose(ref[:, 0], moved[:, 0], atol=1e-4)  # GFN block changed
    torch.testing.assert_close(ref[:, 1:], moved[:, 1:])  # PFN blocks did not


def test_training_needs_attributes_and_bad_losses_raise():
    model = _model().train()
    batch = _batch()
    del batch["attributes"]
    with pytest.raises(ValueError, match="attributes"):
        model(batch)
    with pytest.raises(ValueError, match="no registered loss.*CircleLoss"):
        make_cfg("configs/Synthetic/aanet_R18.yml", ["MODEL.LOSSES.NAME", '("CrossEntropyLoss", "ArcFace")'])
    kw = dict(backbone=model.backbone, in_channels=512, num_classes=5, schema=model.schema,
              pixel_mean=[0, 0, 0], pixel_std=[1, 1, 1])
    unc = lambda losses: UncertaintyLoss(aanet.aanet_tasks(losses))  # noqa: E731
    with pytest.raises(ValueError, match="KeypointMSELoss.*pred_heatmaps"):
        losses = build_test_losses("CrossEntropyLoss", "KeypointMSELoss")
        AANet(**kw, losses=losses, uncertainty=unc(losses))
    with pytest.raises(ValueError, match="CrossEntropyLoss"):
        losses = build_test_losses("TripletLoss")
        AANet(**kw, losses=losses, uncertainty=unc(losses))
    # any registered loss reading logits or features becomes its own uncertainty-weighted task
    cfg = make_cfg("configs/Synthetic/aanet_R18.yml", SMALL + ["MODEL.LOSSES.NAME", '("CrossEntropyLoss", "FocalLoss", "Cosface")'])
    from fastreid.modeling import build_model
    with_more = build_model(cfg).train()
    assert with_more.uncertainty.tasks == ["global_id", "global_focal", "part_id", "part_focal", "attr", "cosface"]
    assert set(with_more(_batch())) == {f"loss_{t}" for t in with_more.uncertainty.tasks}


def test_new_layers_get_the_heads_learning_rate():
    from fastreid.solver.build import build_optimizer

    cfg = make_cfg("configs/Market1501/aanet_R50.yml", SMALL)
    model = _model(config="configs/Market1501/aanet_R50.yml")
    optimizer, _ = build_optimizer(cfg, model, contiguous=False)
    lr = {id(g["params"][0]): g["lr"] for g in optimizer.param_groups}
    assert lr[id(model.backbone.conv1.weight)] == pytest.approx(0.01)
    for p in (model.gfn.classifier.weight, model.pfn.reductions[0][0].weight, model.afn.reduction[0].weight,
              model.uncertainty.log_vars):
        assert lr[id(p)] == pytest.approx(0.1)
    assert cfg.SOLVER.OPT == "SGD" and cfg.SOLVER.STEPS == [20] and cfg.SOLVER.MAX_EPOCH == 40


@pytest.mark.parametrize("config", AANET_CONFIGS)
def test_configs_parse(config):
    cfg = make_cfg(config)
    assert cfg.MODEL.META_ARCHITECTURE == "AANet" and "attributes" in cfg.INPUT.EXTRA_FIELDS
    assert cfg.INPUT.FLIP.ENABLED and not cfg.INPUT.REA.ENABLED and not cfg.INPUT.PADDING.ENABLED
    if "R152" in config:
        assert cfg.MODEL.BACKBONE.DEPTH == "152x" and cfg.SOLVER.IMS_PER_BATCH == 24
    elif "R50" in config:
        assert cfg.MODEL.BACKBONE.DEPTH == "50x" and cfg.SOLVER.IMS_PER_BATCH == 32
    if config.startswith(("configs/Market", "configs/Duke", "configs/Base")):
        assert list(cfg.INPUT.SIZE_TRAIN) == [384, 128] and cfg.MODEL.BACKBONE.PRETRAIN


def test_resnet152_variant_builds_deeper_than_resnet50():
    from fastreid.modeling import build_model

    counts, models = {}, {}
    for depth in ("50", "152"):
        cfg = make_cfg(f"configs/Market1501/aanet_R{depth}.yml", [
            "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.HEADS.NUM_CLASSES", "751", "MODEL.DEVICE", "cpu",
            "MODEL.ATTRIBUTES.FIELDS", str(list(MARKET_ATTRIBUTES))])
        models[depth] = model = build_model(cfg)
        counts[depth] = sum(p.numel() for p in model.backbone.parameters())
    assert [len(getattr(models["152"].backbone, f"layer{i}")) for i in range(1, 5)] == [3, 8, 36, 3]
    assert [len(getattr(models["50"].backbone, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    assert counts["152"] > 2 * counts["50"] and 58e6 < counts["152"] < 59e6  # torchvision R152: 58.1M w/o fc
    assert models["152"].backbone.layer4[0].conv2.stride == (1, 1)  # last stride 1


# --------------------------------------------------------------------------- end to end
def test_aanet_trains_and_evaluates_on_synthetic(synthetic_root, tmp_path):
    import random

    import numpy as np

    # the synthetic config (96x32, batch 32) on the 30-id fixture set: 2 epochs = 26 iterations;
    # seeded (data order and initialisation) so that the retrieval margins below are reproducible
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    cfg = make_cfg("configs/Synthetic/aanet_R18.yml", [
        "DATASETS.ROOT", str(synthetic_root), "OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_EPOCH", "2",
        "TEST.EVAL_PERIOD", "2", "SOLVER.LOG_PERIOD", "4", "DATALOADER.NUM_WORKERS", "0", "MODEL.DEVICE", "cpu"])
    trainer, results = train(cfg)
    rows = [json.loads(x) for x in open(tmp_path / "metrics.json")]
    losses = logged_losses(tmp_path)
    assert len(losses) >= 5 and sum(losses[-2:]) < sum(losses[:2]), losses
    logged = set().union(*rows)
    assert {"loss_global_id", "loss_part_id", "loss_attr", "aanet/log_var_attr", "aanet/sigma_part_id",
            "aanet/raw_global_id"} <= logged
    # the UN-weighted task losses fall, each of them (the weighted total can fall through the learned
    # log-variances alone). Measured here: global_id 3.39 -> 3.30, part_id 3.40 -> 3.38 (the
    # identity classifiers start near log(30) and learn slowly), attr 0.98 -> 0.73
    for task in ("global_id", "part_id", "attr"):
        raw = [r[f"aanet/raw_{task}"] for r in rows if f"aanet/raw_{task}" in r]
        assert len(raw) >= 5 and np.mean(raw[-2:]) < np.mean(raw[:2]), (task, raw)
    # seeds 0-2 gave Rank-1 9.7-12.4 and mAP 7.6-9.1 here, chance is 3.2 / 4.4
    rand_r1, rand_map = random_feature_metrics(cfg)
    assert results["Rank-1"] > rand_r1 + 4 and results["mAP"] > rand_map + 2, (results, rand_r1, rand_map)
    assert "attr-mean" in results  # the attribute evaluator read the model's attribute probabilities
    assert trainer.model.uncertainty.log_vars.detach().abs().min() > 0  # the task weights were learned


def test_aanet_on_real_mini_market(mini_market_root, tmp_path):
    from fastreid.data.datasets import DATASET_REGISTRY

    if "Market1501Attr" not in DATASET_REGISTRY._obj_map:
        pytest.skip("Market1501Attr dataset not registered")
    if not (ATTRIBUTES / "market_attribute.mat").is_file():
        pytest.skip("no Market attribute file")
    # 32 training crops, batch 16: 6 epochs = 12 iterations
    cfg = make_cfg("configs/MiniMarket/aanet_R18.yml", [
        "DATASETS.ROOT", str(mini_market_root), "DATASETS.ATTRIBUTE_FILE", str(ATTRIBUTES / "market_attribute.mat"),
        "OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_EPOCH", "6", "TEST.EVAL_PERIOD", "6", "SOLVER.LOG_PERIOD", "2",
        "DATALOADER.NUM_WORKERS", "0", "MODEL.DEVICE", "cpu"])
    _, results, untrained = train(cfg, untrained_metrics=True, seed=0)
    losses = logged_losses(tmp_path)
    assert losses[-1] < losses[0], losses
    assert {"Rank-1", "mAP"} <= set(results)
    # 16 unseen test identities after a dozen iterations from scratch: retrieval does not beat the
    # untrained network here (measured mAP before/after: see the README), the attribute heads,
    # whose labels are shared across identities, must
    print("MINI aanet", untrained["attr-mean"], results["attr-mean"], untrained["mAP"], results["mAP"])
    assert results["attr-mean"] > untrained["attr-mean"] + 5, (untrained["attr-mean"], results["attr-mean"])
