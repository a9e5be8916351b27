#!/usr/bin/env python
"""APR and AANet against FastReID's Baseline: same backbone, input and batch, one process.

    python benchmarks/bench_attr_models.py [--depth 50x] [--input 256 128] [--batch 32] [--rounds 5]

Training step = forward + backward + SGD step on a random batch with Market's 27 attribute fields
(labels drawn at random: the cost does not depend on their values). Targets (issue 3): APR <= 1.1x
and AANet <= 1.3x the Baseline's step time. Peak memory as in benchmarks/common.py.
Writes benchmarks/results/attr_models.json.
"""

import functools
import os

import torch

from common import compare_training_steps, training_step_arguments

import fastreid_ext

fastreid_ext.register()  # compat layer + registration, before any fastreid import
from fastreid.modeling import build_model

from fastreid_ext.config import get_ext_cfg, merge_checked
from fastreid_ext.data.synthetic import MARKET_ATTRIBUTES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: name -> (config, overrides). "APR (BoT settings)" is APR's head on exactly the Baseline's backbone
#: (last stride 1) with its BN neck and losses (CE + triplet): the like-for-like cost of the head. The
#: paper's APR (last stride 2, no triplet loss, no BN neck) is cheaper than the BoT Baseline for those
#: reasons, not because of its head.
MODELS = {"Baseline (BoT)": ("configs/Market1501/bagtricks_R50.yml", []),
          "APR": ("configs/Market1501/apr_R50.yml", []),
          "APR (BoT settings)": ("configs/Market1501/apr_R50.yml", [
              "MODEL.BACKBONE.LAST_STRIDE", "1", "MODEL.LOSSES.NAME", '("CrossEntropyLoss", "TripletLoss")', "MODEL.HEADS.WITH_BNNECK", "True",
              "MODEL.LOSSES.TRI.MARGIN", "0.3", "MODEL.LOSSES.TRI.HARD_MINING", "True"]),
          "AANet": ("configs/Market1501/aanet_R50.yml", [])}


def build(config, a):
    config, extra = config
    cfg = get_ext_cfg()
    merge_checked(cfg, os.path.join(REPO, config), [
        "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.BACKBONE.DEPTH", a.depth,
        "MODEL.BACKBONE.FEAT_DIM", "512" if a.depth in ("18x", "34x") else "2048",
        "MODEL.HEADS.NUM_CLASSES", "751", "MODEL.DEVICE", a.device,
        "MODEL.ATTRIBUTES.FIELDS", str(list(MARKET_ATTRIBUTES)),
        "INPUT.SIZE_TRAIN", str(a.input), "INPUT.SIZE_TEST", str(a.input)] + list(extra))
    return build_model(cfg)


def main():
    a = training_step_arguments(__doc__.splitlines()[0], os.path.join(REPO, "benchmarks/results/attr_models.json"))
    torch.manual_seed(0)
    h, w = a.input
    attrs = torch.randint(0, 2, (a.batch, len(MARKET_ATTRIBUTES)))
    attrs[:, MARKET_ATTRIBUTES.index("age")] = torch.randint(0, 4, (a.batch,))
    batch = {"images": torch.rand(a.batch, 3, h, w) * 255, "targets": torch.randint(0, 751, (a.batch,)),
             "camids": torch.zeros(a.batch, dtype=torch.long), "attributes": attrs}
    batch = {k: v.to(a.device) for k, v in batch.items()}
    compare_training_steps({name: functools.partial(build, config, a) for name, config in MODELS.items()}, batch, a,
                           __file__, f"APR / AANet vs Baseline: ResNet-{a.depth[:-1]}, {h}x{w}, batch {a.batch}, {a.device}",
                           {"APR": "<= 1.1", "APR (BoT settings)": "<= 1.1", "AANet": "<= 1.3"})


if __name__ == "__main__":
    main()
