"""Keypoint-heatmap MSE (RBNet, equation 3): the 17-channel decoder output against keypoint heatmaps."""

from __future__ import annotations

import torch
from . import LOSS_REGISTRY, ScaledLoss


@LOSS_REGISTRY.register()
class KeypointMSELoss(ScaledLoss):
    """``mean_{b,k,y,x} w_bk (P_bk(y, x) - H_bk(y, x))^2`` with ``w_bk = 1`` for a joint whose
    visibility flag is > 0 and 0 otherwise (unlabelled, off-image or dropped as low-confidence by the
    pose tool): those joints neither pull the prediction towards a blank map nor count as errors.

    ``pred_heatmaps`` and ``heatmaps``: (B, 17, h, w); ``keypoints``: (B, 17, 3) with the visibility
    flag in the last column. Masked joints still count in the mean's denominator (mmpose's
    ``KeypointMSELoss`` with ``use_target_weight``), so the value does not jump with the number of
    visible joints in a batch. Value times ``MODEL.LOSSES.MSE.SCALE`` (the paper's l3).
    """

    inputs = ("pred_heatmaps", "heatmaps", "keypoints")
    key = "mse"
    cfg_node = "MSE"

    def forward(self, pred_heatmaps: torch.Tensor, heatmaps: torch.Tensor, keypoints: torch.Tensor):
        if pred_heatmaps.shape != heatmaps.shape:
            raise ValueError(f"KeypointMSELoss: predicted heatmaps {tuple(pred_heatmaps.shape)} and targets "
                             f"{tuple(heatmaps.shape)} differ in shape")
        if keypoints.shape[:2] != heatmaps.shape[:2]:
            raise ValueError(f"KeypointMSELoss: keypoints {tuple(keypoints.shape)} do not match heatmaps "
                             f"{tuple(heatmaps.shape)}")
        w = (keypoints[..., 2] > 0).to(pred_heatmaps.dtype)[..., None, None]
        return ((pred_heatmaps - heatmaps) ** 2 * w).mean() * self.scale
