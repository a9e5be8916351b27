#!/usr/bin/env python
"""HA-CNN vs FastReID's ResNet-50 Baseline (BoT), each at its own input size, in one process.

    python benchmarks/bench_hacnn.py [--batch 32] [--rounds 10] [--device cpu]

Reports training-step time (forward + backward + Adam step, 751 identities), inference images/s,
parameters and peak memory; ratios are HA-CNN / Baseline. Targets (issue 4, CPU): training step
<= 0.35x and inference throughput >= 3x the Baseline's. Writes benchmarks/results/hacnn.json.
"""

import argparse
import os
import sys

import torch

from common import (cpu_step_memory_mb, environment, measure_step_in_this_process, peak_memory_mb,
                    report, time_interleaved, train_step)

import fastreid_ext

fastreid_ext.register()  # compat layer + registration, before any fastreid import
from fastreid.modeling import build_model

from fastreid_ext.config import get_ext_cfg, merge_checked

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {  # name -> (config, input size)
    "Baseline R50 (BoT)": ("configs/Market1501/bagtricks_R50.yml", (256, 128)),
    "HA-CNN": ("configs/Market1501/hacnn.yml", (160, 64)),
}


def build(config, device):
    cfg = get_ext_cfg()
    merge_checked(cfg, os.path.join(REPO, config), ["MODEL.BACKBONE.PRETRAIN", "False",
                                                   "MODEL.HEADS.NUM_CLASSES", "751",
                                                   "MODEL.DEVICE", device])
    return build_model(cfg)


def params(model, classifiers=True):
    return sum(p.numel() for n, p in model.named_parameters()
               if classifiers or not any(k in n for k in ("classifier", "weight_cls", "heads.weight")))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks/results/hacnn.json"))
    p.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)  # child process of the memory probe
    a, _ = p.parse_known_args()
    torch.manual_seed(0)
    models, batches, train_fns, infer_fns = {}, {}, {}, {}
    for name, (config, (h, w)) in MODELS.items():
        if a.memory_of and name != a.memory_of:
            continue
        model = build(config, a.device)
        opt = torch.optim.Adam(model.parameters(), lr=3e-4)
        batch = {"images": torch.rand(a.batch, 3, h, w, device=a.device) * 255,
                 "targets": torch.randint(0, 751, (a.batch,), device=a.device)}
        models[name], batches[name] = model, batch

        def train_fn(model=model, opt=opt, batch=batch):
            model.train()
            train_step(model, opt, batch)

        def infer(model=model, batch=batch):
            model.eval()
            with torch.no_grad():
                model({"images": batch["images"]})

        train_fns[name], infer_fns[name] = train_fn, infer
    if a.memory_of:
        return measure_step_in_this_process(train_fns[a.memory_of])
    t_train = time_interleaved(train_fns, a.rounds, device=a.device)
    t_infer = time_interleaved(infer_fns, a.rounds, device=a.device)
    rows = []
    base = next(iter(MODELS))
    for name, (config, (h, w)) in MODELS.items():
        rows.append({
            "model": name, "input": f"{h}x{w}", "params_M": params(models[name]) / 1e6,
            "params_no_cls_M": params(models[name], classifiers=False) / 1e6,
            "train_step_s": t_train[name], "train_ratio": t_train[name] / t_train[base],
            "infer_img_per_s": a.batch / t_infer[name], "infer_speedup": t_infer[base] / t_infer[name],
            "peak_mem_MiB": (peak_memory_mb(train_fns[name], a.device) if a.device.startswith("cuda")
                             else cpu_step_memory_mb(__file__, name, sys.argv[1:])),
        })
    report(f"HA-CNN vs ResNet-50 Baseline, batch {a.batch}, {a.device}", rows,
           ["model", "input", "params_M", "params_no_cls_M", "train_step_s", "train_ratio",
            "infer_img_per_s", "infer_speedup", "peak_mem_MiB"], a.out,
           {"env": environment(a.device), "targets": {"train_ratio": "<= 0.35", "infer_speedup": ">= 3"}})


if __name__ == "__main__":
    main()
