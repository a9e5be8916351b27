"""HA-CNN through FastReID's trainer/evaluator: synthetic set, real mini Market, attention pictures."""

import numpy as np
import torch

from conftest import REPO, make_cfg, random_feature_metrics, logged_losses, train


def test_hacnn_trains_and_evaluates_on_synthetic(synthetic_root, tmp_path):
    # the paper's layout with a quarter of its channels (32/64/96, 128-d features): the same two
    # branches, attention modules and regions, ~4x cheaper per step than the full network
    cfg = make_cfg("configs/Synthetic/hacnn.yml", [
        "DATASETS.ROOT", str(synthetic_root), "OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_EPOCH", "6",
        "MODEL.HACNN.CHANNELS", "[32, 64, 96]", "MODEL.HACNN.FEAT_DIM", "128",
        "TEST.EVAL_PERIOD", "6", "SOLVER.LOG_PERIOD", "5", "DATALOADER.NUM_WORKERS", "0"])
    trainer, results = train(cfg, seed=0)
    print("HACNN e2e", results["Rank-1"], results["mAP"])
    losses = logged_losses(tmp_path)
    assert np.mean(losses[-2:]) < np.mean(losses[:2]), losses
    rand_r1, _ = random_feature_metrics(cfg)
    assert results["Rank-1"] > rand_r1 + 10, (results, rand_r1)
    # hard attention moved away from its initialisation during training
    from fastreid_ext.modeling.backbones.hacnn import hard_attn_init_bias
    bias = trainer.model.backbone.ha1.hard_attn.fc.bias.detach()
    assert not torch.allclose(bias, hard_attn_init_bias(4))


def test_hacnn_on_real_mini_market(mini_market_root, tmp_path):
    cfg = make_cfg("configs/MiniMarket/hacnn.yml", [
        "DATASETS.ROOT", str(mini_market_root), "OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_EPOCH", "12",
        "TEST.EVAL_PERIOD", "12", "SOLVER.LOG_PERIOD", "2", "DATALOADER.NUM_WORKERS", "0"])
    _, results, untrained = train(cfg, untrained_metrics=True, seed=0)
    losses = logged_losses(tmp_path)
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    assert set(results) >= {"Rank-1", "mAP", "mINP"}
    print("MINI hacnn", untrained["mAP"], results["mAP"], untrained["Rank-1"], results["Rank-1"])
    assert results["mAP"] > untrained["mAP"], (untrained, results)


def test_visualize_tool_writes_pngs(synthetic_root, tmp_path):
    import sys
    sys.path.insert(0, str(REPO / "tools"))
    import visualize_hacnn

    visualize_hacnn.main(["--config-file", str(REPO / "configs/Synthetic/hacnn.yml"), "--output",
                          str(tmp_path), "--num", "3", "DATASETS.ROOT", str(synthetic_root),
                          "DATALOADER.NUM_WORKERS", "0"])
    pngs = sorted(tmp_path.glob("*.png"))
    assert len(pngs) == 3 and all(p.stat().st_size > 1000 for p in pngs)


def test_initial_regions_are_four_horizontal_stripes():
    import sys
    sys.path.insert(0, str(REPO / "tools"))
    from visualize_hacnn import region_boxes

    from fastreid_ext.modeling.backbones.hacnn import hard_attn_init_bias

    theta = torch.tanh(hard_attn_init_bias(4)).view(4, 2)
    boxes = region_boxes(theta, 4, 160, 64)
    assert all(b[0] == 0 and b[2] == 64 for b in boxes)  # full width
    centres = [(b[1] + b[3]) / 2 for b in boxes]
    assert centres == sorted(centres) and all(abs((b[3] - b[1]) - 40) < 1e-6 for b in boxes)
