#!/usr/bin/env python
"""Quality of the pose tool's keypoints: PCK@0.1 against the synthetic renderer's true keypoints.

    python benchmarks/pose_pck.py                               # BlazePose on a fresh synthetic test set
    python benchmarks/pose_pck.py --models blazepose hrnet --hrnet-limit 64   # + random-init HRNet
    python benchmarks/pose_pck.py --models hrnet --checkpoint hrnet_w32_coco_256x192.pth

The synthetic generator (``fastreid_ext.data.synthetic``) knows every crop's COCO-17 keypoints; this
script generates a Market-style set (``--test-ids`` identities, seed ``--seed``; or uses ``--root``),
runs the tool's runner on its ``query`` and ``bounding_box_test`` splits into a separate folder (the
ground-truth files are never touched), and scores the written keypoints.

PCK@alpha: a labelled joint (true visibility > 0; occluded ones count) is correct when the predicted
point lies within ``alpha x ref`` pixels, whatever visibility the model gave it. ``ref`` is the crop's
longer side (the person box of a re-id crop: 12.8 px at 128x64; the project's convention,
``fastreid_ext.evaluation.keypoints.pck``). Also reported: PCK with ``ref`` = the longer side of the
tight box around the true labelled joints (stricter), per-joint PCK, and the mean signed offset per
joint (prediction - truth, crop pixels: where a model's joint definitions differ from the renderer's).
Writes benchmarks/results/pose_pck.json.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from fastreid_ext.data.coco_keypoints import COCO_KEYPOINTS, read_coco_keypoints  # noqa: E402
from fastreid_ext.pose.base import build_pose_model  # noqa: E402
from fastreid_ext.pose.runner import folder_splits, run  # noqa: E402

SPLITS = ("query", "bounding_box_test")


def score(pred_files, gt_files, alpha=0.1, limit=None):
    """PCK numbers of predicted keypoint files against ground-truth files (same split order)."""
    import torch

    from fastreid_ext.evaluation.keypoints import pck

    pred_xy, true, ref_crop, ref_box = [], [], [], []
    for pf, gf in zip(pred_files, gt_files):
        pred, gt = read_coco_keypoints(pf), read_coco_keypoints(gf)
        with open(gf) as f:
            import json

            sizes = {im["file_name"]: (im["height"], im["width"]) for im in json.load(f)["images"]}
        for name in sorted(pred.keypoints):
            g = gt.keypoints[name]
            lab = g[:, 2] > 0
            if lab.sum() < 2:
                continue  # distractor / junk boxes without a person
            pred_xy.append(pred.keypoints[name][:, :2])
            true.append(g)
            ref_crop.append(max(sizes[name]))
            ref_box.append(max(np.ptp(g[lab, 0]), np.ptp(g[lab, 1])))
    P, T = torch.tensor(np.array(pred_xy)), torch.tensor(np.array(true))
    rc, rb = torch.tensor(ref_crop, dtype=torch.float32), torch.tensor(ref_box, dtype=torch.float32)
    hit, tot = pck(P, T, rc, alpha)
    hit_b, _ = pck(P, T, rb, alpha)
    per_joint, offsets = {}, {}
    for k, name in enumerate(COCO_KEYPOINTS):
        h, t = pck(P[:, k:k + 1], T[:, k:k + 1], rc, alpha)
        per_joint[name] = h / t if t else float("nan")
        lab = T[:, k, 2] > 0
        d = (P[lab, k] - T[lab, k, :2]).mean(0)
        offsets[name] = [round(float(d[0]), 2), round(float(d[1]), 2)]
    return {"images": len(true), "labelled_joints": tot, f"pck@{alpha}_crop": hit / tot,
            f"pck@{alpha}_truebox": hit_b / tot, "per_joint": per_joint, "mean_offset_xy_px": offsets}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["blazepose"], choices=["blazepose", "hrnet"])
    p.add_argument("--checkpoint", default="", help="HRNet checkpoint (default: random init, a pipeline check)")
    p.add_argument("--margin", type=float, default=None, help="BlazePose margin (default: the model's, 1.25)")
    p.add_argument("--root", default="", help="a DATASETS.ROOT holding synthetic_market (default: generate one)")
    p.add_argument("--test-ids", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hrnet-limit", type=int, default=64, help="HRNet on CPU: score only the first N query crops")
    p.add_argument("--work", default="", help="folder for the generated set and predictions (default: a temp dir)")
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks/results/pose_pck.json"))
    a = p.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="pose_pck_")
    root = a.root
    if not root:
        from fastreid_ext.data.synthetic import generate

        root = os.path.join(work, "data")
        if not os.path.isdir(os.path.join(root, "synthetic_market")):
            generate(os.path.join(root, "synthetic_market"), domain="market", num_train_ids=2,
                     num_test_ids=a.test_ids, seed=a.seed, progress=False)
    data = os.path.join(root, "synthetic_market")
    rows = []
    for name in a.models:
        extra = {"margin": a.margin} if name == "blazepose" and a.margin else {}
        model = build_pose_model(name, a.checkpoint if name == "hrnet" else "", device="cpu", **extra)
        splits = [s for split in SPLITS for s in folder_splits(os.path.join(data, split), os.path.join(work, name))]
        if name == "hrnet" and not a.checkpoint and a.hrnet_limit:
            splits = splits[:1]
            splits[0].keys = splits[0].keys[:a.hrnet_limit]
        t = time.perf_counter()
        run(model, splits, overwrite=True, progress=False, log=lambda m: None)
        secs = time.perf_counter() - t
        res = score([s.keypoint_file for s in splits],
                    [os.path.join(data, "keypoints", f"person_keypoints_{s.name}.json") for s in splits])
        rows.append({"model": model.describe(), "splits": "+".join(s.name for s in splits), "seconds": round(secs, 1),
                     **res})
        print(f"{name}: PCK@0.1 {res['pck@0.1_crop']:.3f} (crop's longer side), {res['pck@0.1_truebox']:.3f} "
              f"(true box) over {res['labelled_joints']} joints of {res['images']} crops")
        print("  per joint: " + ", ".join(f"{k} {v:.2f}" for k, v in res["per_joint"].items()))
        print("  mean offset (x, y) px: " + ", ".join(f"{k} {v}" for k, v in res["mean_offset_xy_px"].items()))
    from common import environment, report

    report("Pose tool PCK@0.1 on the synthetic set (true keypoints from the renderer)", rows,
           ["model", "splits", "images", "labelled_joints", "pck@0.1_crop", "pck@0.1_truebox", "seconds"], a.out,
           {"env": environment("cpu"), "command": " ".join(sys.argv),
            "synthetic": {"root": data, "test_ids": a.test_ids, "seed": a.seed}})


if __name__ == "__main__":
    main()
