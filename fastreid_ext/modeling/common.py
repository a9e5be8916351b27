"""Pieces every fastreid-ext meta-architecture shares (FastReID's Baseline has them inline).

* :class:`ReidMetaArch`: pixel mean/std buffers, ``device``, and out-of-place image normalisation
  on the model's device (FastReID normalised the batch in place).
* :func:`loss_kwargs_from_cfg`: the ``MODEL.LOSSES`` mapping of FastReID's ``Baseline.from_config``.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import compat


def loss_kwargs_from_cfg(cfg) -> dict:
    """``{"loss_names", "ce", "tri", "circle", "cosface"}`` exactly as FastReID's Baseline reads them."""
    L = cfg.MODEL.LOSSES
    return {
        "loss_names": tuple(L.NAME),
        "ce": {"eps": L.CE.EPSILON, "alpha": L.CE.ALPHA, "scale": L.CE.SCALE},
        "tri": {"margin": L.TRI.MARGIN, "norm_feat": L.TRI.NORM_FEAT, "hard_mining": L.TRI.HARD_MINING,
                "scale": L.TRI.SCALE},
        "circle": {"margin": L.CIRCLE.MARGIN, "gamma": L.CIRCLE.GAMMA, "scale": L.CIRCLE.SCALE},
        "cosface": {"margin": L.COSFACE.MARGIN, "gamma": L.COSFACE.GAMMA, "scale": L.COSFACE.SCALE},
    }


class ReidMetaArch(nn.Module):
    """Base of our meta-architectures: normalisation buffers and device handling."""

    def __init__(self, pixel_mean, pixel_std):
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, -1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, -1, 1, 1), False)

    @property
    def device(self):
        return self.pixel_mean.device

    #: images of the batch on the model's device, normalised out of place (input unchanged)
    preprocess_image = compat.preprocess_image

    def batch_field(self, batched_inputs, key: str) -> torch.Tensor:
        """A per-image training field (``targets``, ``attributes``, ...) on the model's device."""
        if not isinstance(batched_inputs, dict) or key not in batched_inputs:
            raise ValueError(f"{type(self).__name__}: the batch has no '{key}' (needed in training)")
        return batched_inputs[key].to(self.device)
