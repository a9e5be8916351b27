"""Loss registry of fastreid-ext: every loss a model uses is registered here and picked by name.

FastReID 1.4.0 has no loss registry (its Baseline hard-codes four names and ignores the others).
:data:`LOSS_REGISTRY` is FastReID's own :class:`~fastreid.utils.registry.Registry`; the names in
``MODEL.LOSSES.NAME`` are looked up in it by :func:`build_losses`, the one builder. A model decides
which of its tensors feed which loss and how the results are weighted; a loss only says which named
tensors it reads (:attr:`ReidLoss.inputs`) and under which key it reports (:attr:`ReidLoss.key`).

Registered here (names as in FastReID's YAMLs where FastReID has the loss):

===========================  ==========================================  =============================
name                         reads                                       source
===========================  ==========================================  =============================
CrossEntropyLoss             logits, targets                             FastReID (label smoothing)
TripletLoss                  features, targets                           FastReID (batch hard / soft)
CircleLoss                   features, targets                           FastReID pairwise circle loss
Cosface                      features, targets                           FastReID pairwise cosface
FocalLoss                    logits, targets                             FastReID focal loss
AttributeCrossEntropyLoss    attr_logits, attr_targets                   APR / AANet attribute heads
KeypointMSELoss              pred_heatmaps, heatmaps, keypoints          RBNet eq. 3 (masked MSE)
BoxInsideLoss                subregion_scores, subregion_outside         NPSM (person search)
SoftCrossEntropyLoss         logits, teacher_logits                      MMT soft identity loss
SoftTripletLoss              features, targets, teacher_features         MMT soft triplet loss
UncertaintyLoss              (weights named task losses)                 Kendall et al. (AANet)
===========================  ==========================================  =============================

A user's own loss, registered from their package, is selected by name in a YAML like these::

    from fastreid_ext.modeling.losses import LOSS_REGISTRY, ReidLoss

    @LOSS_REGISTRY.register()
    class MyLoss(ReidLoss):
        inputs = ("features", "targets")
        key = "mine"
        def forward(self, features, targets): ...

Every model of the project (and FastReID's ``Baseline``, through compat patch P17) then computes it
on each of its branches that provides the inputs, as ``loss_mine`` (``loss_mine_<branch>``).
"""

from __future__ import annotations

from typing import Dict, Iterable, Mapping, Optional

import torch
from fastreid.config import configurable
from fastreid.utils.registry import Registry
from torch import nn

LOSS_REGISTRY = Registry("LOSS")
LOSS_REGISTRY.__doc__ = """Registry for re-id losses: ``LOSS_REGISTRY.get(name)(cfg, **extra)`` -> module."""

__all__ = ["LOSS_REGISTRY", "ReidLoss", "ScaledLoss", "build_loss", "build_losses", "check_loss_inputs", "compute_losses",
           "registered_losses"]


class ReidLoss(nn.Module):
    """Base of registered losses: ``forward(**{name: tensor for name in inputs})`` -> scalar.

    ``inputs``: the names of the tensors the loss reads (a model provides them by these names);
    ``key``: the loss is reported as ``loss_<key>`` (plus the model's branch suffix).
    """

    inputs: tuple = ()
    key: str = ""


class ScaledLoss(ReidLoss):
    """A loss whose only config value is ``MODEL.LOSSES.<cfg_node>.SCALE`` (its weight)."""

    cfg_node: str = ""

    @configurable
    def __init__(self, *, scale: float = 1.0):
        super().__init__()
        self.scale = scale

    @classmethod
    def from_config(cls, cfg):
        return {"scale": cfg.MODEL.LOSSES[cls.cfg_node].SCALE}


def registered_losses() -> list:
    """Names of every registered loss, sorted."""
    return sorted(LOSS_REGISTRY._obj_map)


def build_loss(cfg, name: str, **extra) -> nn.Module:
    """The loss registered as ``name``, built from ``cfg`` (and model-given ``extra`` arguments)."""
    try:
        cls = LOSS_REGISTRY.get(name)
    except KeyError:
        raise KeyError(f"unknown loss '{name}' in MODEL.LOSSES.NAME; registered losses: "
                       f"{registered_losses()}") from None
    return cls(cfg, **extra)


def build_losses(cfg, names: Optional[Iterable[str]] = None,
                 extra: Optional[Mapping[str, dict]] = None) -> nn.ModuleDict:
    """``{name: loss}`` for ``names`` (default ``cfg.MODEL.LOSSES.NAME``), in that order; ``extra``
    gives model-chosen constructor arguments per name (e.g. AANet's attribute-loss averaging)."""
    names = list(cfg.MODEL.LOSSES.NAME if names is None else names)
    if not names:
        raise ValueError(f"MODEL.LOSSES.NAME is empty; registered losses: {registered_losses()}")
    if len(set(names)) != len(names):
        raise ValueError(f"MODEL.LOSSES.NAME lists a loss twice: {names}")
    return nn.ModuleDict({n: build_loss(cfg, n, **(extra or {}).get(n, {})) for n in names})


def check_loss_inputs(model: str, losses: Mapping[str, nn.Module], available: Iterable[str]) -> None:
    """Raise, at build time, for a loss that reads a tensor ``model`` does not provide."""
    available = set(available)
    for name, loss in losses.items():
        missing = [i for i in getattr(loss, "inputs", ()) if i not in available]
        if missing:
            raise ValueError(f"{model} cannot compute {name}: it reads {list(loss.inputs)}, and {model} does "
                             f"not provide {missing} (it provides {sorted(available)}); remove it from "
                             "MODEL.LOSSES.NAME")


def compute_losses(losses: Mapping[str, nn.Module], tensors: Mapping[str, object], suffix: str = "",
                   keys: Optional[Mapping[str, str]] = None,
                   weights: Optional[Mapping[str, float]] = None) -> Dict[str, torch.Tensor]:
    """``{"loss_<key><suffix>": value}`` of every loss in ``losses`` on the named ``tensors``.

    ``keys`` renames a loss's report key (e.g. APR reports CrossEntropyLoss as ``loss_id``);
    ``weights`` multiplies a loss's value by a model-chosen weight (e.g. APR's lambda).
    """
    out = {}
    for name, loss in losses.items():
        key = (keys or {}).get(name, f"loss_{loss.key}")
        value = loss(**{i: tensors[i] for i in loss.inputs})
        if weights and name in weights:
            value = value * weights[name]
        out[key + suffix] = value
    return out


from . import attribute, keypoint, mmt, reid_losses, search, uncertainty  # noqa: E402,F401  (registration)
from .attribute import AttributeCrossEntropyLoss  # noqa: E402
from .keypoint import KeypointMSELoss  # noqa: E402
from .mmt import SoftCrossEntropyLoss, SoftTripletLoss  # noqa: E402
from .reid_losses import CircleLoss, Cosface, CrossEntropyLoss, FocalLoss, TripletLoss  # noqa: E402
from .uncertainty import UncertaintyLoss  # noqa: E402

__all__ += ["AttributeCrossEntropyLoss", "CircleLoss", "Cosface", "CrossEntropyLoss", "FocalLoss",
            "KeypointMSELoss", "SoftCrossEntropyLoss", "SoftTripletLoss", "TripletLoss", "UncertaintyLoss"]
