#!/usr/bin/env python
"""Speed of the pose tool: images/s per model, batch size and device; Market-1501 time.

    python benchmarks/bench_pose.py                          # BlazePose + random-init HRNet, this machine
    python benchmarks/bench_pose.py --models hrnet --device cuda --hrnet-batches 1 64 128 256
    python benchmarks/bench_pose.py --market                 # + BlazePose over a 36k-crop synthetic set

Two figures per configuration, on 64x128 synthetic crops (Market's size):

* ``model img/s``: ``model.predict`` on prepared crops (network + decoding), median of interleaved
  rounds (benchmarks/common.py), the device kept busy;
* ``tool img/s``: the whole tool (``fastreid_ext.pose.runner.run``: decoding the JPEGs, preparing,
  predicting, writing parts, merging) on a folder of crops; Market-1501's 36,036 crops at that rate
  give the extrapolated ``market_min``.

``--market`` generates a synthetic Market-style set of about 36,036 crops and runs
``tools/make_keypoints.py --model blazepose`` over it once (wall time, in a subprocess): the measured
time for all of Market. HRNet runs flip test (mmpose's default) with random weights (no checkpoint
here; the speed does not depend on the weights). Goals (issue 9): BlazePose over Market <= 15 min on
a 2-core CPU; HRNet >= 500 img/s with flip test on a GPU. Writes benchmarks/results/pose.json.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from common import environment, report, time_interleaved

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from fastreid_ext.pose.base import build_pose_model  # noqa: E402
from fastreid_ext.pose.runner import folder_splits, run  # noqa: E402

MARKET_IMAGES = 36036


def crops_folder(work: str, n: int, seed: int = 0) -> str:
    """A folder holding ``n`` synthetic 64x128 JPEG crops (taken from a generated set, repeated)."""
    from fastreid_ext.data.synthetic import generate

    src = os.path.join(work, "src", "synthetic_market")
    if not os.path.isdir(src):
        generate(src, domain="market", num_train_ids=40, num_test_ids=2, seed=seed, progress=False)
    names = sorted(os.listdir(os.path.join(src, "bounding_box_train")))
    dst = os.path.join(work, f"crops_{n}")
    if not os.path.isdir(dst):
        os.makedirs(dst)
        for i in range(n):
            shutil.copy(os.path.join(src, "bounding_box_train", names[i % len(names)]),
                        os.path.join(dst, f"{i:06d}.jpg"))
    return dst


def configs(a):
    out = []
    if "blazepose" in a.models:
        for threads, bs in a.blazepose_configs:
            out.append(("blazepose", {"threads": threads}, bs))
    if "hrnet" in a.models:
        for bs in a.hrnet_batches:
            out.append(("hrnet", {"flip_test": True}, bs))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["blazepose", "hrnet"], choices=["blazepose", "hrnet"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="HRNet's device")
    p.add_argument("--blazepose-configs", nargs="+", default=["1x1", "2x2", "2x8"],
                   help="INTERPRETERSxBATCH for BlazePose (one CPU thread per interpreter)")
    p.add_argument("--hrnet-batches", nargs="+", type=int, default=None,
                   help="default: 1 8 on CPU, 1 64 128 256 on GPU")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--tool-images", type=int, default=None, help="crops for the tool run (default: 512 BlazePose, "
                                                                 "24 HRNet on CPU, 2048 on GPU)")
    p.add_argument("--market", action="store_true", help="measure BlazePose over a 36,036-crop synthetic set")
    p.add_argument("--work", default="", help="scratch folder (default: a temp dir, removed)")
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks/results/pose.json"))
    a = p.parse_args()
    a.blazepose_configs = [tuple(int(v) for v in c.split("x")) for c in a.blazepose_configs]
    gpu = a.device.startswith("cuda")
    a.hrnet_batches = a.hrnet_batches or ([1, 64, 128, 256] if gpu else [1, 8])
    work = a.work or tempfile.mkdtemp(prefix="bench_pose_")
    try:
        rows = measure(a, work, gpu)
        extra = {"env": environment(a.device if "hrnet" in a.models else "cpu"), "command": " ".join(sys.argv),
                 "goals": {"blazepose_market_min_cpu": "<= 15", "hrnet_img_s_gpu_flip": ">= 500"}}
        if a.market:
            extra["market_measured"] = measure_market(work)
            rows.append({"model": "blazepose (tool, synthetic Market-size set)", "device": "cpu",
                         "batch": extra["market_measured"]["batch"],
                         "tool_img_s": extra["market_measured"]["img_s"],
                         "market_min": extra["market_measured"]["minutes_per_36036"]})
        report(f"Pose tool speed ({os.cpu_count()} CPUs{', ' + torch.cuda.get_device_name() if gpu else ''})", rows,
               ["model", "device", "batch", "model_img_s", "tool_img_s", "market_min"], a.out, extra)
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)


def measure(a, work, gpu):
    from PIL import Image

    rows, fns, batches = [], {}, {}
    models = {}
    src = crops_folder(work, 64)
    imgs = [np.asarray(Image.open(os.path.join(src, f)).convert("RGB")) for f in sorted(os.listdir(src))]
    for name, kw, bs in configs(a):
        key = f"{name} {'x'.join(f'{v}' for v in kw.values())} bs{bs}"
        device = a.device if name == "hrnet" else "cpu"
        mkey = (name, tuple(kw.items()))
        if mkey not in models:
            torch.manual_seed(0)
            models[mkey] = build_pose_model(name, "", device=device, **kw)
        model = models[mkey]
        prepared = [model.prepare(imgs[i % len(imgs)]) for i in range(bs)]
        batches[key] = bs
        fns[key] = (lambda m=model, p=prepared: m.predict(p))
    rounds = {k: (a.rounds if k.startswith("blazepose") or gpu else max(2, a.rounds // 2)) for k in fns}
    t_model = {}
    for fam in ("blazepose", "hrnet"):  # interleaved within a family (same device and thread budget)
        sub = {k: f for k, f in fns.items() if k.startswith(fam)}
        if sub:
            t_model.update(time_interleaved(sub, min(rounds[k] for k in sub), warmup=1,
                                            device=a.device if fam == "hrnet" else "cpu"))
    for name, kw, bs in configs(a):
        key = f"{name} {'x'.join(f'{v}' for v in kw.values())} bs{bs}"
        model = models[(name, tuple(kw.items()))]
        n = a.tool_images or (512 if name == "blazepose" else (2048 if gpu else 24))
        folder = crops_folder(work, n)
        out_dir = os.path.join(work, "out", key.replace(" ", "_"))
        summary = run(model, folder_splits(folder, out_dir), batch_size=bs, overwrite=True, progress=False,
                      log=lambda m: None)
        shutil.rmtree(out_dir, ignore_errors=True)
        tool = summary.processed / summary.seconds
        rows.append({"model": f"{name} ({model.describe()})", "device": model.device, "batch": bs,
                     "model_img_s": bs / t_model[key], "tool_img_s": tool,
                     "market_min": MARKET_IMAGES / tool / 60, "tool_images": n})
        print(f"{key}: model {bs / t_model[key]:.1f} img/s, tool {tool:.1f} img/s -> Market "
              f"{MARKET_IMAGES / tool / 60:.1f} min", flush=True)
    return rows


def measure_market(work):
    """BlazePose through the tool's command line over a synthetic set of about 36,036 crops."""
    from fastreid_ext.data.synthetic import generate

    root = os.path.join(work, "market36k")
    if not os.path.isdir(os.path.join(root, "synthetic_market")):
        t = time.perf_counter()
        # 667 + 667 identities, 4-9 images per camera: about Market's 36,036 crops
        generate(os.path.join(root, "synthetic_market"), domain="market", num_train_ids=667, num_test_ids=667,
                 images_per_cam=(4, 9), seed=0, progress=False)
        print(f"generated the synthetic Market-size set in {time.perf_counter() - t:.0f} s", flush=True)
    out = os.path.join(work, "market36k_keypoints")
    cmd = [sys.executable, os.path.join(REPO, "tools/make_keypoints.py"), "--dataset", "SyntheticMarket",
           "--root", root, "--out", out, "--model", "blazepose", "--overwrite", "--no-progress"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    secs = time.perf_counter() - t
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    print(proc.stdout)
    from fastreid_ext.data.coco_keypoints import read_coco_keypoints

    n = sum(len(read_coco_keypoints(os.path.join(out, f)).keypoints) for f in os.listdir(out) if f.endswith(".json"))
    return {"images": n, "seconds": round(secs, 1), "img_s": n / secs, "minutes": secs / 60,
            "minutes_per_36036": secs / 60 * MARKET_IMAGES / n, "command": " ".join(cmd), "batch": "default"}


if __name__ == "__main__":
    main()
