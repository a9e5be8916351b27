#!/usr/bin/env python
"""RBNet against FastReID's Baseline (BoT): same backbone, input and batch, one process, interleaved.

    python benchmarks/bench_rbnet.py [--depth 50x] [--input 256 128] [--batch 32] [--rounds 5]

Training step = forward + backward + Adam step on a random batch (images, identities, 17 keypoint
heatmaps at half the input, keypoints). RBNet = the Baseline's backbone and head, plus the reverse
backbone (decoder), the mask, a second backbone with its head and the keypoint loss. Target (issue 10):
RBNet <= 2.2x the Baseline's step time. Rows also split RBNet's cost: "RBNet without backbone 2" is the
decoder's share (backbone 2 and its head skipped; measured by running RBNet's backbone-1 + decoder
losses alone). Peak memory as in benchmarks/common.py. Writes benchmarks/results/rbnet.json.
"""

import functools
import os

import torch

from common import compare_training_steps, training_step_arguments

import fastreid_ext

fastreid_ext.register()  # compat layer + registration, before any fastreid import
from fastreid.modeling import build_model

from fastreid_ext.config import get_ext_cfg, merge_checked

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {"Baseline (BoT)": "configs/Market1501/bagtricks_R50.yml",
          "RBNet": "configs/Market1501/rbnet_R50.yml",
          "RBNet without backbone 2": "configs/Market1501/rbnet_R50.yml"}


class DecoderOnly(torch.nn.Module):
    """RBNet's backbone 1 + head + decoder + keypoint loss (backbone 2 skipped): the decoder's cost."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch):
        m = self.model
        targets = m.training_targets(batch)
        enc = m.encode(m.preprocess_image(batch))
        out1 = m.heads(enc["feat"], targets)
        losses = {k: v for k, v in m.compute_losses(out1, out1, enc, batch["heatmaps"], batch["keypoints"],
                                                      targets).items() if not k.endswith("2")}
        return {**losses, "mask": enc["mask"].mean() * 0}


def build(name, a):
    cfg = get_ext_cfg()
    merge_checked(cfg, os.path.join(REPO, MODELS[name]), [
        "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.BACKBONE.DEPTH", a.depth,
        "MODEL.BACKBONE.FEAT_DIM", "512" if a.depth in ("18x", "34x") else "2048",
        "MODEL.HEADS.NUM_CLASSES", "751", "MODEL.DEVICE", a.device,
        "INPUT.SIZE_TRAIN", str(a.input), "INPUT.SIZE_TEST", str(a.input)])
    model = build_model(cfg)
    return DecoderOnly(model) if name.endswith("without backbone 2") else model


def main():
    a = training_step_arguments(__doc__.splitlines()[0], os.path.join(REPO, "benchmarks/results/rbnet.json"))
    torch.manual_seed(0)
    h, w = a.input
    kp = torch.rand(a.batch, 17, 3) * torch.tensor([w - 1, h - 1, 0.0]) + torch.tensor([0, 0, 2.0])
    batch = {"images": torch.rand(a.batch, 3, h, w) * 255, "targets": torch.randint(0, 751, (a.batch,)),
             "camids": torch.zeros(a.batch, dtype=torch.long), "keypoints": kp,
             "heatmaps": torch.rand(a.batch, 17, h // 2, w // 2)}
    batch = {k: v.to(a.device) for k, v in batch.items()}
    compare_training_steps({name: functools.partial(build, name, a) for name in MODELS}, batch, a, __file__,
                           f"RBNet vs Baseline: ResNet-{a.depth[:-1]}, {h}x{w}, batch {a.batch}, {a.device}",
                           {"RBNet": "<= 2.2"}, optimizer=lambda params: torch.optim.Adam(params, lr=3.5e-4))

if __name__ == "__main__":
    main()
