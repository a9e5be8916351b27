"""NPSM trained end to end through FastReID's trainer on small synthetic scenes (issue 12): the search beats
a random-box baseline.

From scratch (no ImageNet or crop-trained weights), 90 steps of 4 frames on the 8 training identities'
12 frames, frames at half size (96 x 192, crops 64 x 32), through the stock trainer, loaders, hooks and
``SearchEvaluator``; then the same trained network with each searched region replaced by a random proposal
of its frame (``random_box_search``, the mean of 5 draws) on the 16 unseen test identities' 24 frames.
The search must localise more than twice as often as a random box, and reach 1.5 times its mAP.

Measured with this setting (search vs random box): seed 0: localisation 31.9 vs 8.5 %, mAP 10.7 vs 3.7;
seed 1: 40.4 vs 8.5 %, 11.7 vs 2.8; seed 2: 27.7 vs 8.5 %, 6.2 vs 2.5. **Top-1 is not asserted here**: over
16 queries it moves by one or two queries between seeds (seed 0/1/2: 18.8 / 12.5 / 0.0 against the random
box's 6.2 / 5.0 / 2.5; 120 steps: 25.0 / 6.2 / 12.5 against 6.2 / 7.5 / 3.8), and a re-id half trained for
90 steps on 8 identities ranks the unseen people weakly. The issue's top-1 comparison is measured at the
scale where it means something (30 identities, NPSM from BoT weights, README): 60.0 against 13.3.
"""

import json

import numpy as np
import pytest
import torch

from conftest import make_cfg, train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_npsm_search_beats_a_random_box_baseline(scenes_root, tmp_path):
    from fastreid_ext.data.search.loader import build_search_test_loader
    from fastreid_ext.evaluation.search_evaluator import random_box_search

    cfg = make_cfg("configs/Synthetic/npsm_R18.yml", [
        "MODEL.DEVICE", "cpu", "DATASETS.ROOT", str(scenes_root), "OUTPUT_DIR", str(tmp_path),
        "INPUT.SEARCH.FRAME_SIZE", "[96, 192]", "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]",
        "INPUT.PADDING.SIZE", "2", "MODEL.NPSM.REID_POOL", "[8, 4]",
        "SOLVER.MAX_EPOCH", "30", "SOLVER.STEPS", "[1000]", "SOLVER.WARMUP_ITERS", "5", "SOLVER.BASE_LR", "0.001",
        "SOLVER.IMS_PER_BATCH", "4", "TEST.EVAL_PERIOD", "30", "SOLVER.LOG_PERIOD", "5",
        "SOLVER.CHECKPOINT_PERIOD", "1000", "DATALOADER.NUM_WORKERS", "0", "TEST.SEARCH.FRAMES_PER_BATCH", "8"])
    trainer, results = train(cfg, seed=0)
    assert trainer.max_iter == 90
    assert set(results) >= {"mAP", "top-1", "top-5", "top-10", "localisation"}
    assert (tmp_path / "search" / "SyntheticScenes" / "search_results.json").is_file()
    rows = [json.loads(line) for line in open(tmp_path / "metrics.json")]
    box = [r["loss_box_inside"] for r in rows if "loss_box_inside" in r]
    assert np.mean(box[-3:]) < 0.8 * np.mean(box[:3]), box  # the search learns to keep the person

    _, test_set = build_search_test_loader(trainer.cfg, "SyntheticScenes")
    with torch.no_grad():
        draws = [random_box_search(trainer.model, test_set, seed=s) for s in range(5)]
    rand = {k: float(np.mean([d[k] for d in draws])) for k in ("mAP", "top-1", "top-5", "localisation")}
    print("NPSM e2e search", {k: round(results[k], 1) for k in rand}, "random box", rand, "box loss", box[:3], box[-3:])
    assert results["localisation"] > 2 * rand["localisation"], (results, rand)
    assert results["mAP"] > 1.5 * rand["mAP"], (results, rand)
