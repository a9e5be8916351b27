"""FastReID's losses as registered modules, under the names FastReID's YAMLs already use.

Each is a thin adapter: its config keys are FastReID's (``MODEL.LOSSES.CE/TRI/CIRCLE/COSFACE/FL``),
its value is FastReID's function times the key's ``SCALE`` — exactly what FastReID's Baseline computes.
"""

from __future__ import annotations

from fastreid.config import configurable
from fastreid.modeling.losses import (cross_entropy_loss, focal_loss, pairwise_circleloss, pairwise_cosface,
                                      triplet_loss)

from . import LOSS_REGISTRY, ReidLoss


@LOSS_REGISTRY.register()
class CrossEntropyLoss(ReidLoss):
    """Identity cross-entropy with FastReID's label smoothing (``eps``; ``eps < 0``: adaptive, ``alpha``)."""

    inputs = ("logits", "targets")
    key = "cls"

    @configurable
    def __init__(self, *, eps: float = 0.0, alpha: float = 0.2, scale: float = 1.0):
        super().__init__()
        self.eps, self.alpha, self.scale = eps, alpha, scale

    @classmethod
    def from_config(cls, cfg):
        ce = cfg.MODEL.LOSSES.CE
        return {"eps": ce.EPSILON, "alpha": ce.ALPHA, "scale": ce.SCALE}

    def forward(self, logits, targets):
        return cross_entropy_loss(logits, targets, self.eps, self.alpha) * self.scale


@LOSS_REGISTRY.register()
class TripletLoss(ReidLoss):
    """FastReID's triplet loss (batch-hard or weighted mining; soft margin when ``margin`` is 0)."""

    inputs = ("features", "targets")
    key = "triplet"

    @configurable
    def __init__(self, *, margin: float = 0.3, norm_feat: bool = False, hard_mining: bool = True,
                 scale: float = 1.0):
        super().__init__()
        self.margin, self.norm_feat, self.hard_mining, self.scale = margin, norm_feat, hard_mining, scale

    @classmethod
    def from_config(cls, cfg):
        t = cfg.MODEL.LOSSES.TRI
        return {"margin": t.MARGIN, "norm_feat": t.NORM_FEAT, "hard_mining": t.HARD_MINING, "scale": t.SCALE}

    def forward(self, features, targets):
        return triplet_loss(features, targets, self.margin, self.norm_feat, self.hard_mining) * self.scale


class _PairwiseLoss(ReidLoss):
    inputs = ("features", "targets")
    cfg_node = ""

    @configurable
    def __init__(self, *, margin: float = 0.25, gamma: float = 128.0, scale: float = 1.0):
        super().__init__()
        self.margin, self.gamma, self.scale = margin, gamma, scale

    @classmethod
    def from_config(cls, cfg):
        node = cfg.MODEL.LOSSES[cls.cfg_node]
        return {"margin": node.MARGIN, "gamma": node.GAMMA, "scale": node.SCALE}


@LOSS_REGISTRY.register()
class CircleLoss(_PairwiseLoss):
    """FastReID's pairwise circle loss (``MODEL.LOSSES.CIRCLE``)."""

    key = "circle"
    cfg_node = "CIRCLE"

    def forward(self, features, targets):
        return pairwise_circleloss(features, targets, self.margin, self.gamma) * self.scale


@LOSS_REGISTRY.register()
class Cosface(_PairwiseLoss):
    """FastReID's pairwise cosface loss (``MODEL.LOSSES.COSFACE``)."""

    key = "cosface"
    cfg_node = "COSFACE"

    def forward(self, features, targets):
        return pairwise_cosface(features, targets, self.margin, self.gamma) * self.scale


@LOSS_REGISTRY.register()
class FocalLoss(ReidLoss):
    """FastReID's focal loss on the identity logits (``MODEL.LOSSES.FL``: alpha, gamma, scale)."""

    inputs = ("logits", "targets")
    key = "focal"

    @configurable
    def __init__(self, *, alpha: float = 0.25, gamma: float = 2.0, scale: float = 1.0):
        super().__init__()
        self.alpha, self.gamma, self.scale = alpha, gamma, scale

    @classmethod
    def from_config(cls, cfg):
        f = cfg.MODEL.LOSSES.FL
        return {"alpha": f.ALPHA, "gamma": f.GAMMA, "scale": f.SCALE}

    def forward(self, logits, targets):
        return focal_loss(logits, targets, self.alpha, self.gamma) * self.scale
