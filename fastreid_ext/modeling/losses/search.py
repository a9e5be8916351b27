"""The box-inside loss of NPSM (person search, :mod:`fastreid_ext.modeling.meta_arch.npsm`)."""

from __future__ import annotations

import torch

from . import LOSS_REGISTRY, ScaledLoss


@LOSS_REGISTRY.register()
class BoxInsideLoss(ScaledLoss):
    """Ground-truth pixels left outside the next region, in expectation over the sub-regions.

    One row per (pair, shrinkage step) that had a choice: ``subregion_scores`` (N, M) = the model's
    scores of the step's sub-regions (their mean attention times K*K; padding = -inf) and
    ``subregion_outside`` (N, M) = the fraction of the ground-truth box each sub-region leaves outside
    (0 = contains it; at NPSM's final proposal choice, 1 - IoU). ``L_region = mean_n sum_k
    softmax(scores_n)_k * outside_nk``: 0 when the attention puts all its weight on containing
    sub-regions; the summary's 0-1 loss ("a ground-truth pixel outside R_t costs one") per pixel, made
    differentiable by the expectation.

    ``attention_outside`` (S,): for each (pair, step), the attention mass that lies outside the
    ground-truth box (the K x K map laid over the region). ``L_attention = mean``: the same loss read
    at the attention map that makes the choice; it is dense (every cell gets a gradient), where
    ``L_region`` only compares the few sub-regions, and measured on the synthetic scenes the region
    term alone did not move in 120 steps (our addition; README). ``L = L_attention + L_region``, times
    ``MODEL.LOSSES.BOX_INSIDE.SCALE``.
    """

    inputs = ("subregion_scores", "subregion_outside", "attention_outside")
    key = "box_inside"
    cfg_node = "BOX_INSIDE"

    def forward(self, subregion_scores: torch.Tensor, subregion_outside: torch.Tensor,
                attention_outside: torch.Tensor):
        if subregion_scores.shape != subregion_outside.shape:
            raise ValueError(f"BoxInsideLoss: scores {tuple(subregion_scores.shape)} and outside fractions "
                             f"{tuple(subregion_outside.shape)} differ in shape")
        loss = attention_outside.float().mean() if len(attention_outside) else attention_outside.sum() * 0
        if len(subregion_scores):
            p = subregion_scores.float().softmax(dim=1)
            loss = loss + (p * subregion_outside.float()).sum(1).mean()
        return loss * self.scale
