"""Mutual Mean-Teaching's soft losses (Ge, Chen, Li, "Mutual Mean-Teaching: Pseudo Label Refinery for
Unsupervised Domain Adaptation on Person Re-identification", ICLR 2020).

The teacher tensors (the peer's mean net) are detached: the losses train the student only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from fastreid.config import configurable

from . import LOSS_REGISTRY, ReidLoss, ScaledLoss


@LOSS_REGISTRY.register()
class SoftCrossEntropyLoss(ScaledLoss):
    """MMT's soft identity loss: ``mean_i sum_k -softmax(teacher_logits)_ik log softmax(logits)_ik``,
    times ``MODEL.LOSSES.SOFT_CE.SCALE``."""

    inputs = ("logits", "teacher_logits")
    key = "soft_cls"
    cfg_node = "SOFT_CE"

    def forward(self, logits, teacher_logits):
        target = F.softmax(teacher_logits.detach(), dim=1)
        return (-target * F.log_softmax(logits, dim=1)).sum(1).mean() * self.scale


def _pairwise_euclidean(x: torch.Tensor) -> torch.Tensor:
    sq = (x * x).sum(1, keepdim=True)
    return (sq + sq.t() - 2 * x @ x.t()).clamp_min(1e-12).sqrt()


@LOSS_REGISTRY.register()
class SoftTripletLoss(ReidLoss):
    """MMT's soft triplet loss.

    For every anchor i the student's hardest positive p_i and hardest negative n_i are mined on the
    student's Euclidean distances; the student's ``log softmax(d(i, p_i), d(i, n_i))`` is matched to
    the teacher's ``softmax(d'(i, p_i), d'(i, n_i))`` on the SAME pairs (binary cross-entropy of the
    two-way distributions, averaged over anchors). ``MODEL.LOSSES.SOFT_TRI``: ``NORM_FEAT`` (L2-normalise
    both feature sets first), ``SCALE``.
    """

    inputs = ("features", "targets", "teacher_features")
    key = "soft_triplet"

    @configurable
    def __init__(self, *, norm_feat: bool = False, scale: float = 1.0):
        super().__init__()
        self.norm_feat, self.scale = norm_feat, scale

    @classmethod
    def from_config(cls, cfg):
        t = cfg.MODEL.LOSSES.SOFT_TRI
        return {"norm_feat": t.NORM_FEAT, "scale": t.SCALE}

    def forward(self, features, targets, teacher_features):
        teacher = teacher_features.detach()
        if self.norm_feat:
            features, teacher = F.normalize(features, dim=1), F.normalize(teacher, dim=1)
        dist = _pairwise_euclidean(features)
        same = targets.view(-1, 1).eq(targets.view(1, -1))
        ap_idx = torch.where(same, dist, dist.new_full((), -1.0)).argmax(1)
        an_idx = torch.where(same, dist.new_full((), float("inf")), dist).argmin(1)
        rows = torch.arange(dist.size(0), device=dist.device)
        log_p = F.log_softmax(torch.stack([dist[rows, ap_idx], dist[rows, an_idx]], 1), dim=1)
        with torch.no_grad():
            ref = _pairwise_euclidean(teacher)
            target = F.softmax(torch.stack([ref[rows, ap_idx], ref[rows, an_idx]], 1), dim=1)
        return (-target * log_p).sum(1).mean() * self.scale
