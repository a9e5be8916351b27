"""End-to-end: FastReID's trainer + evaluator through fastreid-ext on CPU, synthetic and real data."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, make_cfg, random_feature_metrics, logged_losses, train


def test_synthetic_train_eval_beats_random_features(synthetic_root, tmp_path):
    cfg = make_cfg("configs/Synthetic/bagtricks_R18.yml", [
        "DATASETS.ROOT", str(synthetic_root), "OUTPUT_DIR", str(tmp_path),
        "SOLVER.MAX_EPOCH", "6", "SOLVER.STEPS", "[5]", "SOLVER.WARMUP_ITERS", "10",
        "SOLVER.CHECKPOINT_PERIOD", "6", "TEST.EVAL_PERIOD", "6", "SOLVER.LOG_PERIOD", "5",
        "DATALOADER.NUM_WORKERS", "0", "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]",
        "INPUT.PADDING.SIZE", "2"])  # 64x32: a quarter of the demo's pixels, the same pipeline
    trainer, results = train(cfg, seed=0)
    print("bagtricks e2e", results["Rank-1"], results["mAP"])
    rand_r1, rand_map = random_feature_metrics(cfg)
    print("random features", rand_r1, rand_map)
    assert trainer.max_iter >= 30
    losses = logged_losses(tmp_path)
    assert np.mean(losses[-2:]) < np.mean(losses[:2]), losses
    # 36 iterations from scratch on 30 identities: well above chance, far from converged
    assert results["Rank-1"] > max(3 * rand_r1, rand_r1 + 8), (results, rand_r1)
    assert results["mAP"] > rand_map + 5, (results, rand_map)
    assert (tmp_path / "model_final.pth").is_file()
    assert list(tmp_path.glob("events.out.tfevents.*")), "tensorboard events are written"


def test_cli_eval_only_and_resume_after_corrupt_checkpoint(synthetic_root, tmp_path):
    """tools/train_net.py as users run it: train, corrupt the last checkpoint, --resume, --eval-only."""
    base = [sys.executable, str(REPO / "tools/train_net.py"), "--config-file",
            str(REPO / "configs/Synthetic/bagtricks_R18.yml")]
    # plumbing only: tiny input and batch, so three process launches stay cheap
    def opts(max_epoch):
        return ["DATASETS.ROOT", str(synthetic_root), "OUTPUT_DIR", str(tmp_path),
                "SOLVER.MAX_EPOCH", str(max_epoch), "SOLVER.CHECKPOINT_PERIOD", "1",
                "TEST.EVAL_PERIOD", str(max_epoch), "DATALOADER.NUM_WORKERS", "0",
                "INPUT.SIZE_TRAIN", "[32, 16]", "INPUT.SIZE_TEST", "[32, 16]", "INPUT.PADDING.SIZE", "2"]

    run = lambda args: subprocess.run(base + args, capture_output=True, text=True, cwd=tmp_path)  # noqa: E731
    r = run(opts(2))
    assert r.returncode == 0, r.stderr[-3000:]
    last = (tmp_path / "last_checkpoint").read_text().strip()
    assert last == "model_final.pth"
    (tmp_path / last).write_bytes((tmp_path / last).read_bytes()[:1000])  # truncated file
    r = run(["--resume"] + opts(3))
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    assert "unreadable" in log and "trying the previous one" in log
    assert "epoch/iter: 2/" in log, "resumed after the last readable epoch, not from scratch"
    r = run(["--eval-only", "MODEL.WEIGHTS", str(tmp_path / "model_final.pth")] + opts(3))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Rank-1" in r.stdout + r.stderr and "mINP" in r.stdout + r.stderr


#: mAP points a short run on the real mini Market must gain over the same network untrained
MINI_MARGIN = 0.0


def test_real_mini_market_train_eval(mini_market_root, tmp_path):
    cfg = make_cfg("configs/MiniMarket/bagtricks_R18.yml", [
        "DATASETS.ROOT", str(mini_market_root), "OUTPUT_DIR", str(tmp_path),
        "SOLVER.MAX_EPOCH", "20", "TEST.EVAL_PERIOD", "20", "SOLVER.LOG_PERIOD", "2",
        "DATALOADER.NUM_WORKERS", "0"])
    trainer, results, untrained = train(cfg, untrained_metrics=True, seed=0)
    losses = logged_losses(tmp_path)
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    assert set(results) >= {"Rank-1", "Rank-5", "Rank-10", "mAP", "mINP"}
    print("MINI bagtricks", untrained["mAP"], results["mAP"], untrained["Rank-1"], results["Rank-1"])
    assert results["mAP"] > untrained["mAP"] + MINI_MARGIN, (untrained, results)
