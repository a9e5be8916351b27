#!/usr/bin/env python
"""Direct transfer vs MMT vs MMT + RBNet on the synthetic pair (issue 11, item 7): a table and JSON.

Each arm is the stock command, ``tools/train_net.py --config-file configs/UDA/<arm>.yml``, run as a
subprocess with the same overrides; the direct-transfer figure is the source pre-training's own
evaluation on the target test set (``source_pretrain/seed<S>/final_eval.json``, last epoch), so the
three rows share the data, the input size and the seeds. Nothing is chosen on the target test set:
every figure is the last epoch's.

    python tools/make_synthetic.py --root datasets/uda_eval/synthetic_market --domain market --train-ids 60 --test-ids 60 --seed 0
    python tools/make_synthetic.py --root datasets/uda_eval/synthetic_duke --domain duke --train-ids 60 --test-ids 60 --seed 1
    python benchmarks/uda_compare.py --root datasets/uda_eval --out logs/uda_eval --arms mmt,mmt_rbnet

Writes ``<out>/uda_compare.json`` and prints a table (Rank-1 / mAP per arm, mean over the seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARMS = {"mmt": "configs/UDA/synthetic_market_to_duke_R18.yml",
        "mmt_rbnet": "configs/UDA/synthetic_market_to_duke_rbnet_R18.yml"}


def last_eval(run_dir: str) -> dict:
    """Rank-1 and mAP of a run's last evaluation (``final_eval.json``, written by the trainer)."""
    with open(os.path.join(run_dir, "final_eval.json")) as f:
        res = json.load(f)
    return {"rank1": res["Rank-1"], "mAP": res["mAP"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="datasets/uda_eval", help="DATASETS.ROOT with synthetic_market and synthetic_duke")
    ap.add_argument("--out", default="logs/uda_eval")
    ap.add_argument("--arms", default="mmt,mmt_rbnet")
    ap.add_argument("--seeds", default="1", help="run seeds (SEED; the pre-training seeds are SEED*10+1, SEED*10+2)")
    ap.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE overrides for every arm")
    args = ap.parse_args(argv)
    rows = []
    os.makedirs(args.out, exist_ok=True)
    for arm in args.arms.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            out = os.path.join(args.out, f"{arm}_seed{seed}")
            cmd = [sys.executable, "tools/train_net.py", "--config-file", ARMS[arm], "DATASETS.ROOT", args.root,
                   "OUTPUT_DIR", out, "SEED", str(seed), "UDA.PRETRAIN.SEEDS", f"[{seed * 10 + 1}, {seed * 10 + 2}]",
                   *args.opts]
            print("$", " ".join(cmd), flush=True)
            t0 = time.time()
            with open(os.path.join(args.out, f"{arm}_seed{seed}.log"), "w") as log:
                subprocess.run(cmd, cwd=REPO, check=True, stdout=log, stderr=subprocess.STDOUT)
            direct = last_eval(os.path.join(REPO, out, "source_pretrain", f"seed{seed * 10 + 1}"))
            adapted = last_eval(os.path.join(REPO, out))
            stats = json.load(open(os.path.join(REPO, out, "uda_stats.json")))
            rows.append({"arm": arm, "seed": seed, "direct": direct, "adapted": adapted, "minutes": (time.time() - t0) / 60,
                         "clusters": [h["num_clusters"] for h in stats], "nmi": [round(h.get("nmi", float("nan")), 3) for h in stats],
                         "command": " ".join(cmd[1:])})
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n| arm | seed | direct transfer R1 / mAP | adapted R1 / mAP | mAP gain | clusters per epoch | minutes |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        d, a = r["direct"], r["adapted"]
        print(f"| {r['arm']} | {r['seed']} | {d['rank1']:.1f} / {d['mAP']:.1f} | {a['rank1']:.1f} / {a['mAP']:.1f} | "
              f"{a['mAP'] - d['mAP']:+.1f} | {r['clusters']} | {r['minutes']:.1f} |")
    path = os.path.join(args.out, "uda_compare.json")
    with open(path, "w") as f:
        json.dump(rows, f, indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()
