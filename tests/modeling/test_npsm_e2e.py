"""NPSM trained end to end through FastReID's trainer on small synthetic scenes (issue 12): the search's
top-1, mAP and localisation beat a random-box baseline.

From scratch (no ImageNet or crop-trained weights), 96 steps of 4 frames (12 epochs) on the 24 training
identities' 32 frames, stored at half size (96 x 192 frames, crops 64 x 32; the ``search_e2e_root``
fixture), through the stock trainer, loaders, hooks and ``SearchEvaluator``; then the same trained network
with each searched region replaced by a random proposal of its frame (``random_box_search``, the mean of 5
draws) on the 32 unseen test identities' 43 frames (32 queries: one query is 3.1 points of top-1). The search
must reach 1.5 times the random box's top-1, twice its mAP and twice its localisation.

Measured with this setting, search vs random box (top-1 / mAP / localisation %):

    seed 0: 25.0 vs 9.4 / 15.8 vs 4.2 / 30.2 vs 8.6 (the test's seed)
    seed 1: 18.8 vs 4.4 / 12.9 vs 3.0 / 33.7 vs 8.6
    seed 2: 21.9 vs 8.1 / 13.7 vs 3.5 / 29.1 vs 8.6
    seed 3: 15.6 vs 5.0 / 13.1 vs 3.2 / 30.2 vs 8.6

and for seed 0, by tools/search_baseline.py on the same weights (mAP / top-1): proposals + its re-id half 21.4 / 31.2,
annotated boxes + its re-id half 37.9 / 37.5. Scores handed to the wrong pairs (a mutation) give top-1 0.0
and fail the test with localisation unchanged. The earlier version of this test (8 training identities, 16
queries, full-size frames, 90 steps) could not assert top-1: it went from 18.8 to 0.0 with the seed.
"""

import json

import numpy as np
import pytest

from conftest import make_cfg, train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_npsm_search_beats_a_random_box_baseline(search_e2e_root, tmp_path):
    import torch

    from fastreid_ext.data.search.loader import build_search_test_loader
    from fastreid_ext.evaluation.search_evaluator import random_box_search

    cfg = make_cfg("configs/Synthetic/npsm_R18.yml", [
        "MODEL.DEVICE", "cpu", "DATASETS.ROOT", str(search_e2e_root), "OUTPUT_DIR", str(tmp_path),
        "INPUT.SEARCH.FRAME_SIZE", "[96, 192]", "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]",
        "INPUT.PADDING.SIZE", "2", "MODEL.NPSM.REID_POOL", "[8, 4]",
        "SOLVER.MAX_EPOCH", "12", "SOLVER.STEPS", "[1000]", "SOLVER.WARMUP_ITERS", "5", "SOLVER.BASE_LR", "0.001",
        "SOLVER.IMS_PER_BATCH", "4", "TEST.EVAL_PERIOD", "12", "SOLVER.LOG_PERIOD", "5",
        "SOLVER.CHECKPOINT_PERIOD", "1000", "DATALOADER.NUM_WORKERS", "0", "TEST.SEARCH.FRAMES_PER_BATCH", "8"])
    trainer, results = train(cfg, seed=0)
    assert trainer.max_iter == 96
    assert set(results) >= {"mAP", "top-1", "top-5", "top-10", "localisation"}
    assert (tmp_path / "search" / "SyntheticScenes" / "search_results.json").is_file()
    rows = [json.loads(line) for line in open(tmp_path / "metrics.json")]
    box = [r["loss_box_inside"] for r in rows if "loss_box_inside" in r]
    assert np.mean(box[-3:]) < 0.8 * np.mean(box[:3]), box  # the search learns to keep the person

    _, test_set = build_search_test_loader(trainer.cfg, "SyntheticScenes")
    assert len(test_set.s.queries) == 32
    with torch.no_grad():
        rand = random_box_search(trainer.model, test_set, seed=0, draws=5)
    print("NPSM e2e search", {k: round(results[k], 1) for k in rand}, "random box",
          {k: round(v, 1) for k, v in rand.items()}, "box loss", box[:3], box[-3:])
    assert results["top-1"] > 1.5 * rand["top-1"], (results, rand)
    assert results["mAP"] > 2 * rand["mAP"], (results, rand)
    assert results["localisation"] > 2 * rand["localisation"], (results, rand)
