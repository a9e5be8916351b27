#!/usr/bin/env python
"""Offline COCO-17 keypoints for every image of a re-id dataset (or a folder of crops), written where
training finds them (``<dataset folder>/keypoints/person_keypoints_<split>.json``).

    python tools/make_keypoints.py --dataset Market1501 --root datasets --model blazepose
    python tools/make_keypoints.py --dataset Market1501 --root datasets \\
        --checkpoint td-hm_hrnet-w32_8xb64-210e_coco-256x192-81c58e40_20220909.pth --save-heatmaps
    python tools/make_keypoints.py --images path/to/crops --out path/to/keypoints --visualize 8
    python tools/make_keypoints.py --dataset MSMT17 --checkpoint hrnet.pth --shard 2/4   # 4 processes

Models: ``hrnet`` (mmpose HRNet-w32 COCO 256x192, a local checkpoint, flip test on; the default when
``--checkpoint`` is a .pth) and ``blazepose`` (MediaPipe's BlazePose full from the mediapipe wheel,
installed by ``make venv``; CPU). Resumable: rerun the same command after a kill; finished chunks are
kept. Results of another model are never mixed in (``--overwrite`` replaces them). Unreadable images
are reported and skipped. See ``fastreid_ext/pose/runner.py`` for the layout, and README
"Offline keypoints (pose tool)".

User errors (unknown dataset, missing folder or checkpoint, results of another model in the way) print
ONE line, ``error: ...``, and exit with status 2; ``--debug`` shows the traceback.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastreid_ext.errors import UserError, run_cli, user_input  # noqa: E402  (light: no torch)
from fastreid_ext.pose.base import MODEL_NAMES  # noqa: E402
from fastreid_ext.pose.runner import DEFAULT_THRESHOLD, parse_shard  # noqa: E402


def argument_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="a registered FastReID dataset name (Market1501, DukeMTMC, MSMT17, "
                                       "SyntheticMarket, ...): every image of every split folder")
    src.add_argument("--images", metavar="DIR", help="a folder of crops (searched recursively): one split")
    p.add_argument("--root", default=None, help="folder holding the dataset folders (default $FASTREID_DATASETS or "
                                                "./datasets, as DATASETS.ROOT)")
    p.add_argument("--model", choices=MODEL_NAMES, default=None,
                   help="pose model (default: hrnet when --checkpoint is a .pth, else blazepose)")
    p.add_argument("--checkpoint", default="", help="HRNet: local mmpose checkpoint (.pth); blazepose: a .tflite "
                                                    "(default: the one `make venv` installed)")
    p.add_argument("--random-init", action="store_true",
                   help="HRNet without a checkpoint: random weights (pipeline checks only; the keypoints mean nothing)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="load a checkpoint that holds objects other than tensors / numpy arrays with full pickle "
                        "(pickle can run code: only for files you trust)")
    p.add_argument("--out", default="", help="folder for the keypoint files (default <dataset folder>/keypoints/, "
                                             "where training looks; elsewhere: set DATASETS.KEYPOINTS_DIR to it)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N (HRNet)")
    p.add_argument("--batch-size", type=int, default=None, help="images per forward (HRNet: 64 on GPU, 8 on CPU; "
                                                                "BlazePose: 1)")
    p.add_argument("--workers", type=int, default=None, help="image loading threads (default min(8, CPUs))")
    p.add_argument("--no-flip-test", action="store_true", help="HRNet: no flip test (half the compute)")
    p.add_argument("--margin", type=float, default=None, help="BlazePose: the crop's longer side fills 256/margin "
                                                              "input pixels (default 1.25)")
    p.add_argument("--threads", type=int, default=None, help="BlazePose: LiteRT threads (default: all CPUs)")
    p.add_argument("--shard", default="0/1", help="i/n: run shard i of n (chunks dealt round-robin); run all n, "
                                                  "in any order, on any machines sharing the output folder")
    p.add_argument("--save-heatmaps", action="store_true",
                   help="also store the model's own heatmaps (float16, heatmaps_<split>.npy + .json)")
    p.add_argument("--visualize", type=int, default=0, metavar="N",
                   help="draw skeletons and heatmaps on N crops per split (<keypoint folder>/vis/pose_<split>.png)")
    p.add_argument("--vis-thr", type=float, default=DEFAULT_THRESHOLD,
                   help="visibility threshold: joints scoring below it get visibility 0 (default %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace results of another model")
    p.add_argument("--no-progress", action="store_true", help="no progress bar / progress lines")
    p.add_argument("--debug", action="store_true", help="show tracebacks of user errors (also FASTREID_EXT_DEBUG=1)")
    return p


def choose_model(args) -> str:
    if args.model:
        return args.model
    return "hrnet" if args.checkpoint and not args.checkpoint.endswith(".tflite") else "blazepose"


def build_model(args):
    from fastreid_ext.pose.base import build_pose_model

    name = choose_model(args)
    if name == "hrnet":
        if not args.checkpoint and not args.random_init:
            raise UserError("--model hrnet needs --checkpoint path/to/hrnet.pth (nothing is downloaded), or "
                            "--random-init for a pipeline check")
        return build_pose_model("hrnet", args.checkpoint, device=args.device, flip_test=not args.no_flip_test,
                                trust_checkpoint=args.trust_checkpoint, batch_size=args.batch_size)
    extra = {k: v for k, v in (("margin", args.margin), ("threads", args.threads)) if v is not None}
    return build_pose_model("blazepose", args.checkpoint, device=args.device, **extra)


def find_splits(args):
    from fastreid_ext.pose.runner import dataset_splits, folder_splits

    if args.images:
        return folder_splits(args.images, args.out)
    import fastreid_ext

    fastreid_ext.register()
    from fastreid_ext.config import get_ext_cfg
    from fastreid_ext.data.build import load_dataset

    cfg = get_ext_cfg()
    if args.root:
        cfg.DATASETS.ROOT = args.root
    return dataset_splits(load_dataset(cfg, args.dataset), args.out, name=args.dataset)


def main(args):
    from fastreid_ext.pose.runner import run

    with user_input("reading the command line"):
        shard = parse_shard(args.shard)
        if not 0.0 <= args.vis_thr <= 1.0:
            raise UserError(f"--vis-thr must lie in [0, 1], got {args.vis_thr}")
        if args.visualize < 0:
            raise UserError(f"--visualize must be >= 0, got {args.visualize}")
    with user_input("listing the images"):
        splits = find_splits(args)
        if args.batch_size is not None and args.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    with user_input("building the pose model"):
        try:
            model = build_model(args)
        except ImportError as e:  # a model's packages are missing: an install problem, said in one line
            raise UserError(str(e)) from e
    # results of another model in the way are UserErrors; anything else the run raises is a bug
    summary = run(model, splits, shard=shard, save_heatmaps=args.save_heatmaps, threshold=args.vis_thr,
                  overwrite=args.overwrite, batch_size=args.batch_size, workers=args.workers,
                  progress=not args.no_progress)
    print(summary.table())
    if args.visualize:
        from fastreid_ext.pose.visualize import draw_split

        done = {s.name for s in summary.splits if s.state == "done"}
        for split in splits:
            if split.name in done:
                print(f"visualized: {draw_split(model, split, args.visualize)}")
    return summary


if __name__ == "__main__":
    args = argument_parser().parse_args()
    sys.exit(run_cli(lambda: main(args), debug=args.debug))
