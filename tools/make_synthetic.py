#!/usr/bin/env python
"""Generate a synthetic Market-1501 / DukeMTMC-reID style re-id dataset.

Example (from the repository root)::

    python tools/make_synthetic.py --root datasets/synthetic_market --domain market \
        --train-ids 100 --test-ids 100 --seed 0

Re-running with the same arguments is a no-op; different arguments on an
existing folder fail unless ``--overwrite`` is given.
"""
import argparse
import json
import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)  # make the source tree importable when not installed

# plain package import: ``import fastreid_ext`` is light (no torch, no FastReID), so the generator
# does not pay for the training stack
from fastreid_ext.data.synthetic import DEFAULT_DIFFICULTY, generate  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", required=True, help="output dataset folder")
    p.add_argument("--domain", choices=("market", "duke"), default="market")
    p.add_argument("--train-ids", type=int, default=100)
    p.add_argument("--test-ids", type=int, default=100)
    p.add_argument("--num-cams", type=int, default=None,
                   help="cameras (default 6 for market, 8 for duke)")
    p.add_argument("--images-per-cam", type=int, nargs=2, default=(2, 5), metavar=("MIN", "MAX"))
    p.add_argument("--distractors", type=int, default=None,
                   help="distractor gallery images (default test-ids // 2)")
    p.add_argument("--junk", type=int, default=None,
                   help="junk (-1) gallery images, market only (default test-ids // 4)")
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--difficulty", type=float, default=DEFAULT_DIFFICULTY,
                   help="nuisance strength: 0 clean, 1 default, ~2 very hard")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing folder generated with other arguments")
    p.add_argument("--silhouettes", action="store_true",
                   help="also write each crop's pedestrian mask under silhouettes/<split>/ (RBNet's mask measure)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    summary = generate(
        a.root, domain=a.domain, num_train_ids=a.train_ids, num_test_ids=a.test_ids,
        num_cams=a.num_cams, images_per_cam=tuple(a.images_per_cam),
        num_distractors=a.distractors, num_junk=a.junk, height=a.height, width=a.width,
        difficulty=a.difficulty, seed=a.seed, progress=not a.no_progress,
        overwrite=a.overwrite, silhouettes=a.silhouettes)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
