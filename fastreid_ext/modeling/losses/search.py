"""The box-inside loss of NPSM (person search, :mod:`fastreid_ext.modeling.meta_arch.npsm`)."""

from __future__ import annotations

import torch

from . import LOSS_REGISTRY, ScaledLoss


@LOSS_REGISTRY.register()
class BoxInsideLoss(ScaledLoss):
    """Ground-truth pixels left outside the next region, in expectation over the sub-regions.

    One row per (pair, shrinkage step) that had a choice: ``subregion_scores`` (N, M) = the model's
    scores of the step's sub-regions as logits (``NPSM.subregion_logits``; padding = -inf) and
    ``subregion_outside`` (N, M) = the fraction of the ground-truth box each sub-region leaves outside
    (0 = contains it; at NPSM's final proposal choice, 1 - IoU). ``L_region = mean_n sum_k
    softmax(scores_n)_k * outside_nk``: 0 when the attention puts all its weight on containing
    sub-regions; the summary's 0-1 loss ("a ground-truth pixel outside R_t costs one") per pixel, made
    differentiable by the expectation.

    ``attention_misfit`` (S,): for each (pair, step), ``KL(u || a)``, the divergence of the step's K x K
    attention ``a`` from ``u``, the uniform distribution over the ground-truth box's part of the region
    (cells weighted by the fraction the box covers). It is at least ``-log(attention mass inside the
    box)``, so it also penalises attention left outside the person, and it is 0 only when the attention
    covers the whole box evenly. ``L_attention = mean``: the same loss read at the attention map that makes
    the choice; it is dense (every cell gets a gradient), where ``L_region`` only compares the few
    sub-regions (our addition; measured on the synthetic scenes, README). ``L = L_attention + L_region``,
    times ``MODEL.LOSSES.BOX_INSIDE.SCALE``.
    """

    inputs = ("subregion_scores", "subregion_outside", "attention_misfit")
    key = "box_inside"
    cfg_node = "BOX_INSIDE"

    def forward(self, subregion_scores: torch.Tensor, subregion_outside: torch.Tensor,
                attention_misfit: torch.Tensor):
        if subregion_scores.shape != subregion_outside.shape:
            raise ValueError(f"BoxInsideLoss: scores {tuple(subregion_scores.shape)} and outside fractions "
                             f"{tuple(subregion_outside.shape)} differ in shape")
        loss = attention_misfit.float().mean() if len(attention_misfit) else attention_misfit.sum() * 0
        if len(subregion_scores):
            p = subregion_scores.float().softmax(dim=1)
            loss = loss + (p * subregion_outside.float()).sum(1).mean()
        return loss * self.scale
