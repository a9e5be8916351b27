#!/usr/bin/env python
"""Where NPSM's search loses the person: per shrinkage step, the share of (query, frame showing the person)
pairs whose region still holds the person, and the share localised at the end (IoU >= 0.5).

    python tools/search_steps.py --config-file configs/Synthetic/npsm_R18.yml \\
        MODEL.WEIGHTS logs/synthetic/npsm_R18/model_final.pth [MODEL.NPSM.SUBREGION_SCORE mean] [--out steps.json]

The test set is the config's ``DATASETS.TESTS[0]`` (a person-search dataset), read with its own loader;
"holds the person" = at most ``--tolerance`` (0.1) of the ground-truth box outside the region. A diagnostic
against the ground truth, not a benchmark metric (that is ``tools/train_net.py --eval-only``). Config
overrides change the search at test time (``MODEL.NPSM.SUBREGION_SCORE``, ``AREA_WEIGHT``, ``STEPS``, ...)
with the same weights.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastreid_ext  # noqa: E402

fastreid_ext.register()

from fastreid_ext.errors import run_cli, user_input  # noqa: E402


def argument_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True, help="the NPSM config")
    p.add_argument("--tolerance", type=float, default=0.1, help="share of the person's box allowed outside")
    p.add_argument("--out", default=None, help="write the figures as JSON")
    p.add_argument("--debug", action="store_true")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs (MODEL.WEIGHTS ...)")
    return p


def main(a):
    from fastreid_ext.data.search.loader import build_search_test_loader
    from fastreid_ext.engine import load_model
    from fastreid_ext.evaluation.search_evaluator import search_step_retention

    with user_input("loading the NPSM model and its test set"):
        cfg, model = load_model(a.config_file, a.opts or [])
        if not getattr(model, "SEARCH", False):
            raise ValueError(f"{a.config_file}: MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE} is not a "
                             "person-search model (NPSM)")
        _, test_set = build_search_test_loader(cfg, cfg.DATASETS.TESTS[0])
    r = search_step_retention(model, test_set, a.tolerance)
    print(f"{r['pairs']} (query, frame showing the person) pairs; sub-region score "
          f"{cfg.MODEL.NPSM.SUBREGION_SCORE}")
    print("| " + " | ".join(f"kept after step {t + 1}" for t in range(len(r["kept"]))) + " | final IoU >= 0.5 |")
    print("|" + " ---: |" * (len(r["kept"]) + 1))
    print("| " + " | ".join(f"{v:.1f} %" for v in r["kept"]) + f" | {r['localised']:.1f} % |")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"config": a.config_file, "opts": a.opts, "tolerance": a.tolerance, **r}, f, indent=1)
    return 0


if __name__ == "__main__":
    args = argument_parser().parse_args()
    sys.exit(run_cli(lambda: main(args), debug=args.debug))
