"""NPSM trained end to end through FastReID's trainer on small synthetic scenes (issue 12).

What a CPU-sized run can show: the person-search loaders, the NPSM model, the box-inside loss and the
evaluator work together through FastReID's trainer and hooks; the box-inside loss falls; and the
search learns where the query is: on unseen test scenes, the attention's mass on the query's person at
the first step (whole frame) is well above what a uniform attention puts there (the person's share of
the frame; the untrained network is close to it). Measured here: box loss 1.98 -> 1.06 in 30 steps,
attention on the person 0.140, untrained 0.060.

Not asserted, because it is not true yet: the issue's "top-1 beats a random-box baseline". Measured on
the 30-identity scenes after 300 steps from BoT weights (README): NPSM's search top-1 10.0 / mAP 5.0,
the same network on a random proposal per frame 16.7 / 5.7 (its localisation is better, 13.3 % vs 8.4 %).
"""

import json

import numpy as np
import pytest
import torch

from conftest import make_cfg, train

pytestmark = pytest.mark.usefixtures("one_thread")


@torch.no_grad()
def attention_on_person(model, test_set):
    """(mean attention mass on the query's person at the first step, the mass a uniform attention would put
    there = the person's share of the frame), over the (query, frame showing it) pairs."""
    from fastreid_ext.modeling.layers.npsm import cell_coverage

    model.eval()
    s, mass, share = test_set.s, [], []
    for i in range(test_set.batches()):
        b = test_set.batch(i)
        out = model.inference(b)
        h, w = b["images"].shape[-2:]
        for j, (qi, frame) in enumerate(zip(b["pair_queries"].tolist(), b["pair_frames"])):
            fr = s.frames[frame]
            gt = fr.boxes[fr.pids == s.queries[qi].pid]
            if len(gt):
                cover = cell_coverage(out["trajectory"][j, :1], torch.tensor(gt[:1], dtype=torch.float32),
                                      *out["attention"].shape[-2:])
                mass.append(float((out["attention"][j, 0] * cover[0]).sum()))
                share.append(float(cover[0].mean()))
    return float(np.mean(mass)), float(np.mean(share))


def test_npsm_trains_through_fastreid_and_learns_where_the_query_is(scenes_root, tmp_path):
    from fastreid_ext.data.search.loader import build_search_test_loader

    cfg = make_cfg("configs/Synthetic/npsm_R18.yml", [
        "MODEL.DEVICE", "cpu", "DATASETS.ROOT", str(scenes_root), "OUTPUT_DIR", str(tmp_path),
        "SOLVER.MAX_EPOCH", "10", "SOLVER.STEPS", "[100]", "SOLVER.WARMUP_ITERS", "5", "SOLVER.BASE_LR", "0.001",
        "SOLVER.IMS_PER_BATCH", "4", "TEST.EVAL_PERIOD", "10", "SOLVER.LOG_PERIOD", "2",
        "SOLVER.CHECKPOINT_PERIOD", "100", "DATALOADER.NUM_WORKERS", "0", "TEST.SEARCH.FRAMES_PER_BATCH", "8"])
    trainer, results = train(cfg, seed=0)
    _, test_set = build_search_test_loader(trainer.cfg, "SyntheticScenes")
    rows = [json.loads(line) for line in open(tmp_path / "metrics.json")]
    box = [r["loss_box_inside"] for r in rows if "loss_box_inside" in r]
    print("NPSM e2e", dict(results), "box loss", box[:2], box[-2:])
    assert set(results) >= {"mAP", "top-1", "top-5", "top-10", "localisation"}
    assert (tmp_path / "search" / "SyntheticScenes" / "search_results.json").is_file()
    assert np.mean(box[-2:]) < 0.9 * np.mean(box[:2]), box  # the search learns to keep the person
    mass, uniform = attention_on_person(trainer.model, test_set)
    print("attention mass on the query's person, step 1:", mass, "uniform attention:", uniform)
    assert mass > 1.6 * uniform, (mass, uniform)  # measured 0.140 vs 0.064 (untrained: 0.060)
