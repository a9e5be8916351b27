"""Pieces every fastreid-ext meta-architecture shares (FastReID's Baseline has them inline).

* :class:`ReidMetaArch`: pixel mean/std buffers, ``device``, out-of-place image normalisation on the
  model's device (FastReID normalised the batch in place), the training-batch accessors and the
  eval-mode contract (:meth:`ReidMetaArch.inference`).
* :func:`event_storage`: FastReID's active event storage, or None outside a trainer.
* :func:`precise_bn_targets`: FastReID's PreciseBN rule for identity targets.
* :func:`attribute_schema`: a config's attribute heads.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import compat


def event_storage():
    """FastReID's current event storage, or None when no trainer is running."""
    from fastreid.utils.events import get_event_storage

    try:
        return get_event_storage()
    except AssertionError:
        return None


def precise_bn_targets(targets: torch.Tensor) -> torch.Tensor:
    """FastReID's PreciseBN convention (``meta_arch/baseline.py``): a batch whose targets sum to a
    negative number (PreciseBN's placeholder labels) trains as if every target were 0, so margin
    classifiers do not index out of range. Returns a new tensor (the input is not modified)."""
    return torch.zeros_like(targets) if targets.sum() < 0 else targets


def attribute_schema(cfg):
    """The attribute heads of a config: fields ``MODEL.ATTRIBUTES.FIELDS`` (resolved from the training
    set's attribute file when the trainer starts, :func:`fastreid_ext.data.build.resolve_attribute_fields`),
    colour grouping ``MODEL.ATTRIBUTES.GROUP_COLOURS``. Reads the config only, never a dataset."""
    from ..data.attributes import AttributeSchema

    fields = list(cfg.MODEL.ATTRIBUTES.FIELDS)
    if not fields:
        raise ValueError(
            f"{cfg.MODEL.META_ARCHITECTURE} needs MODEL.ATTRIBUTES.FIELDS (the attribute fields of the batch's "
            "'attributes', in the attribute file's order). tools/train_net.py and ExtTrainer fill it in from the "
            "training set's attribute file and write it to the run's config.yaml; when building a model yourself, "
            "call fastreid_ext.data.build.resolve_attribute_fields(cfg) first or set the key")
    return AttributeSchema(fields, cfg.MODEL.ATTRIBUTES.GROUP_COLOURS)


class ReidMetaArch(nn.Module):
    """Base of our meta-architectures: normalisation buffers, device handling, batch accessors."""

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

    def training_targets(self, batched_inputs) -> torch.Tensor:
        """Identity targets of a training batch (long, on the model's device, PreciseBN rule applied)."""
        return precise_bn_targets(self.batch_field(batched_inputs, "targets").long())
