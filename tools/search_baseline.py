#!/usr/bin/env python
"""Person search by proposals + a re-id model (the two-step baseline), evaluated as PRW / CUHK-SYSU define it.

    python tools/make_synthetic.py --root datasets/synthetic_market --domain market --train-ids 30 --test-ids 30
    python tools/train_net.py --config-file configs/Synthetic/bagtricks_R18.yml OUTPUT_DIR logs/search/bot_R18
    python tools/make_scenes.py --root datasets/synthetic_scenes --train-ids 30 --test-ids 30
    python tools/search_baseline.py --scenes datasets/synthetic_scenes --config-file configs/Synthetic/bagtricks_R18.yml \
        MODEL.WEIGHTS logs/search/bot_R18/model_final.pth

Prints mAP / top-1 / top-5 / top-10 for: selective-search proposals + the model's features (the
baseline), the annotated boxes + the model's features (re-id alone, detection solved), and proposals
+ random features (chance). With a person-search model (NPSM: ``--config-file configs/Synthetic/npsm_R18.yml
MODEL.WEIGHTS logs/synthetic/npsm_R18/model_final.pth``) also: its search (one region per gallery frame,
what ``tools/train_net.py --eval-only`` reports) and the same model on one random proposal per frame
(localisation by chance, its re-id unchanged; the mean of ``--random-draws`` draws); the first two rows then use its re-id half on crops. ``--dataset cuhk-sysu --gallery-size N`` reads CUHK-SYSU instead;
``--multi-camera`` is PRW's multi-camera protocol. ``--out`` writes the figures as JSON.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastreid_ext  # noqa: E402

fastreid_ext.register()
import numpy as np  # noqa: E402
import torch  # noqa: E402

from fastreid_ext.errors import run_cli, user_input  # noqa: E402


def _at_least_one(v: str) -> int:
    if int(v) < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return int(v)


def argument_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenes", required=True, help="dataset folder (PRW layout, or CUHK-SYSU with --dataset)")
    p.add_argument("--dataset", choices=("prw", "cuhk-sysu"), default="prw")
    p.add_argument("--gallery-size", type=int, default=100, help="CUHK-SYSU's TestG<N>.mat")
    p.add_argument("--config-file", required=True, help="the re-id model's config")
    p.add_argument("--multi-camera", action="store_true", help="PRW: galleries of other cameras only")
    p.add_argument("--random-draws", type=_at_least_one, default=5,
                   help="NPSM: the random-proposal row is the mean of this many draws")
    p.add_argument("--out", default=None, help="write the figures as JSON")
    p.add_argument("--debug", action="store_true")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs (MODEL.WEIGHTS ...)")
    return p


def main(a):
    from fastreid_ext.data.search import read_cuhk_sysu, read_prw
    from fastreid_ext.data.search.proposals import compute_proposals
    from fastreid_ext.engine import load_model
    from fastreid_ext.evaluation.search_baseline import run_search_baseline
    from fastreid_ext.evaluation.search_evaluation import evaluate_search

    with user_input("reading the scenes"):
        s = read_prw(a.scenes) if a.dataset == "prw" else read_cuhk_sysu(a.scenes, a.gallery_size)
    with user_input("loading the re-id model"):
        cfg, model = load_model(a.config_file, a.opts or [])
    props = compute_proposals(s, os.path.join(a.scenes, "proposals"), frames=s.test)
    rows = {"proposals + re-id": run_search_baseline(model, cfg, s, props, a.multi_camera),
            "annotated boxes + re-id": run_search_baseline(model, cfg, s, None, a.multi_camera)}
    if getattr(model, "SEARCH", False):  # NPSM: its own search, and its features on random proposals
        from fastreid.evaluation import inference_on_dataset

        from fastreid_ext.data.search.loader import SearchTestSet, SearchBatches, search_frame_size
        from fastreid_ext.engine.inference import InferenceOutputs
        from fastreid_ext.evaluation.search_evaluator import SearchEvaluator, random_box_search

        ts = SearchTestSet(s, props, cfg.INPUT.SIZE_TEST, search_frame_size(cfg), cfg.TEST.SEARCH.FRAMES_PER_BATCH,
                           a.multi_camera)
        loader = torch.utils.data.DataLoader(SearchBatches(ts), batch_size=None)
        npsm = dict(inference_on_dataset(InferenceOutputs(model), loader, SearchEvaluator(cfg, ts)))
        rows["NPSM search"] = npsm
        rows["NPSM on a random proposal"] = random_box_search(model, ts, seed=0, draws=a.random_draws)

    # chance: a seeded random feature per proposal and per query (no crops needed)
    rng = np.random.default_rng(0)
    chance = {n: (props[n], rng.standard_normal((len(props[n]), 64))) for n in s.test}
    rows["proposals + random features"] = evaluate_search(s, chance, list(rng.standard_normal((len(s.queries), 64))),
                                                          multi_camera=a.multi_camera)
    print(f"\n{'method':<30} {'mAP':>6} {'top-1':>6} {'top-5':>6} {'top-10':>7} {'loc.':>6}")
    for k, r in rows.items():
        loc = f"{r['localisation']:6.1f}" if "localisation" in r else f"{'':>6}"
        print(f"{k:<30} {r['mAP']:6.1f} {r['top-1']:6.1f} {r['top-5']:6.1f} {r['top-10']:7.1f} {loc}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"scenes": a.scenes, "config": a.config_file, "opts": a.opts, "results": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    args = argument_parser().parse_args()
    sys.exit(run_cli(lambda: main(args), debug=args.debug))
