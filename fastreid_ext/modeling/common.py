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


def checked_loss_kwargs(model: str, loss_kwargs: dict | None, supported) -> dict:
    """Copy of ``loss_kwargs`` with ``loss_names`` validated against ``supported`` (FastReID ignores
    unknown names silently; we raise, naming them) and empty ``ce``/``tri`` entries filled in."""
    kw = dict(loss_kwargs or {})
    names = tuple(kw.get("loss_names", ("CrossEntropyLoss",)))
    unknown = [n for n in names if n not in supported]
    if unknown:
        raise ValueError(f"{model}: unknown loss name(s) {unknown} in MODEL.LOSSES.NAME; "
                         f"supported: {list(supported)}")
    if not names:
        raise ValueError(f"{model}: MODEL.LOSSES.NAME is empty; use some of {list(supported)}")
    kw["loss_names"] = names
    kw.setdefault("ce", {})
    kw.setdefault("tri", {})
    return kw


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
