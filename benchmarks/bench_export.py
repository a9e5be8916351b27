#!/usr/bin/env python
"""Inference throughput of every model: PyTorch eager vs TorchScript vs ONNX Runtime, in one process.

    python benchmarks/bench_export.py [--batches 1 64] [--rounds 3] [--device cpu] [--models Baseline APR ...]

Each model is built from its Market-1501 config at its real input size (256x128; HA-CNN 160x64) with
random weights and 751 identities, exported with ``tools/export.py``'s code (dynamic batch, float32;
each export passes its parity check on the way, the figures are in the JSON), and the three runtimes
are timed interleaved (eager, TorchScript, ONNX Runtime, eager, ...; medians) at each batch size, on
the same images, with the same number of threads (``--threads``, default all cores: torch's
``set_num_threads`` and ONNX Runtime's intra-op threads). Ratios are against eager PyTorch. Issue 14's
goal: ONNX Runtime >= 1.3x eager on CPU at batch 64 for the ResNet models. ``--device cuda`` times the
CUDA builds (ONNX Runtime only with its CUDA provider). Writes benchmarks/results/export.json
(``--out``).
"""

import argparse
import os
import sys
import tempfile
import time

import torch

from common import environment, report, time_interleaved

import fastreid_ext

fastreid_ext.register()  # compat layer + registration, before any fastreid import
from fastreid.modeling import build_model  # noqa: E402

from fastreid_ext.config import get_ext_cfg, merge_checked  # noqa: E402
from fastreid_ext.data.synthetic import MARKET_ATTRIBUTES  # noqa: E402
from fastreid_ext.export.exporter import export_model  # noqa: E402
from fastreid_ext.export.runtime import load_exported  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: name -> (config, extra options, is a ResNet model for the 1.3x goal)
MODELS = {
    "Baseline": ("configs/Market1501/bagtricks_R50.yml", [], True),
    "APR": ("configs/Market1501/apr_R50.yml", ["MODEL.ATTRIBUTES.FIELDS", str(list(MARKET_ATTRIBUTES))], True),
    "AANet": ("configs/Market1501/aanet_R50.yml", ["MODEL.ATTRIBUTES.FIELDS", str(list(MARKET_ATTRIBUTES))], True),
    "RBNet": ("configs/Market1501/rbnet_R50.yml", [], True),
    "MMT": ("configs/UDA/market_to_duke_R50.yml", [], True),
    "HA-CNN": ("configs/Market1501/hacnn.yml", [], False),
}


def build(config, opts, device):
    cfg = get_ext_cfg()
    merge_checked(cfg, os.path.join(REPO, config), ["MODEL.BACKBONE.PRETRAIN", "False", "MODEL.HEADS.NUM_CLASSES",
                                                   "751", "MODEL.DEVICE", device] + list(opts))
    torch.manual_seed(0)
    return cfg, build_model(cfg).eval()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks/results/export.json"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    rows, exports = [], {}
    tmp = tempfile.mkdtemp(prefix="bench_export_")
    for name in a.models:
        config, opts, resnet = MODELS[name]
        cfg, model = build(config, opts, a.device)
        h, w = cfg.INPUT.SIZE_TEST
        g = torch.Generator().manual_seed(0)
        check = torch.rand(4, 3, h, w, generator=g) * 255
        runtimes = {"eager": None}
        for fmt in ("torchscript", "onnx"):
            t = time.perf_counter()
            rep = export_model(cfg, model, fmt, os.path.join(tmp, name), check, dynamic_batch=True,
                               check_source="4 seeded random images")
            exports[f"{name}/{fmt}"] = {"seconds_incl_check": time.perf_counter() - t,
                                        "max_rel_diff": max(c["rel_max_abs"] for c in rep.checks),
                                        "min_cosine": min(c["min_cosine"] for c in rep.checks),
                                        "size_MiB": os.path.getsize(rep.path) / 2**20}
            try:
                runtimes[fmt] = load_exported(rep.path, device=a.device)
            except Exception as e:  # noqa: BLE001 - e.g. no CUDA provider: reported, not timed
                print(f"{name}: {fmt} not timed on {a.device}: {e}")
        for bs in a.batches:
            x = (torch.rand(bs, 3, h, w, generator=g) * 255)
            xd = x.to(a.device)
            fns = {}

            def eager(xd=xd):
                with torch.no_grad():
                    model({"images": xd})

            fns["eager"] = eager
            for fmt, rt in runtimes.items():
                if rt is not None:
                    fns[fmt] = (lambda rt=rt, x=x: rt.run(x))
            times = time_interleaved(fns, a.rounds, warmup=1, device=a.device)
            for k, sec in times.items():
                rows.append({"model": name, "batch": bs, "runtime": k, "images_per_s": bs / sec,
                             "speedup_vs_eager": times["eager"] / sec, "resnet": resnet})
            print(f"{name} batch {bs}: " + ", ".join(f"{k} {bs / s:.1f} img/s" for k, s in times.items()), flush=True)
        del runtimes, model
    goal = [r for r in rows if r["resnet"] and r["runtime"] == "onnx" and r["batch"] == 64]
    met = all(r["speedup_vs_eager"] >= 1.3 for r in goal) if goal else None
    report(f"Inference throughput, {a.device}, {a.threads} threads (speed-up = eager time / runtime time)", rows,
           ["model", "batch", "runtime", "images_per_s", "speedup_vs_eager"], a.out,
           {"env": {**environment(a.device), **__import__("fastreid_ext.export.exporter", fromlist=["versions"]).versions()},
            "exports": exports, "goal": "ONNX Runtime >= 1.3x eager at batch 64 on CPU (ResNet models)",
            "goal_met": met})
    print(f"goal (ONNX Runtime >= 1.3x eager at batch 64, ResNet models): {'met' if met else 'NOT met' if goal else 'n/a'}")


if __name__ == "__main__":
    sys.exit(main())
