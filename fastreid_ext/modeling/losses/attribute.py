"""Attribute cross-entropy of APR and AANet: one softmax cross-entropy per attribute head."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from fastreid.config import configurable

from ...data.attributes import IGNORE
from . import LOSS_REGISTRY, ReidLoss

AVERAGES = ("all", "labelled")


@LOSS_REGISTRY.register()
class AttributeCrossEntropyLoss(ReidLoss):
    """Mean over attribute heads of each head's cross-entropy over its labelled images.

    ``attr_logits``: one (B, K_j) tensor per head; ``attr_targets``: (B, M) head targets, -1 =
    unlabelled (ignored). Each head's loss is averaged over its labelled images. Heads are then
    averaged by ``average``:

    * ``"all"`` (APR, Lin et al. 2019, Eq. 2 with the 1/M of the overall objective): over ALL M
      heads, a head without a labelled image in the batch counting 0;
    * ``"labelled"`` (AANet's choice): over the heads that have a labelled image in the batch; the
      others add an exact zero that keeps them in the graph (DistributedDataParallel expects every
      parameter to receive a gradient).

    The two agree whenever every head has a labelled image in the batch. Value times
    ``MODEL.LOSSES.ATTR.SCALE``.
    """

    inputs = ("attr_logits", "attr_targets")
    key = "attr"

    @configurable
    def __init__(self, *, average: str = "all", scale: float = 1.0):
        super().__init__()
        if average not in AVERAGES:
            raise ValueError(f"AttributeCrossEntropyLoss: average must be one of {AVERAGES}, got {average!r}")
        self.average, self.scale = average, scale

    @classmethod
    def from_config(cls, cfg, average: str = "all"):
        return {"average": average, "scale": cfg.MODEL.LOSSES.ATTR.SCALE}

    def forward(self, attr_logits: Sequence[torch.Tensor], attr_targets: torch.Tensor) -> torch.Tensor:
        if attr_targets.dim() != 2 or attr_targets.size(1) != len(attr_logits):
            raise ValueError(f"attribute targets of shape {tuple(attr_targets.shape)} do not match "
                             f"{len(attr_logits)} heads")
        if self.average == "all":
            total = attr_logits[0].new_zeros(())
            for j, lg in enumerate(attr_logits):
                t = attr_targets[:, j]
                n = (t != IGNORE).sum().clamp_min(1)
                total = total + F.cross_entropy(lg, t, ignore_index=IGNORE, reduction="sum") / n
            return total / len(attr_logits) * self.scale
        labelled = [bool((attr_targets[:, j] != IGNORE).any()) for j in range(len(attr_logits))]
        terms = [F.cross_entropy(lg, attr_targets[:, j], ignore_index=IGNORE)
                 for j, (lg, ok) in enumerate(zip(attr_logits, labelled)) if ok]
        unused = sum(lg.sum() for lg, ok in zip(attr_logits, labelled) if not ok) * 0.0
        return ((torch.stack(terms).mean() if terms else 0.0) + unused) * self.scale
