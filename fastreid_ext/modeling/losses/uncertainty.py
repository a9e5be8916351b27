"""Homoscedastic-uncertainty weighting of named task losses (Kendall, Gal, Cipolla, "Multi-Task Learning
Using Uncertainty to Weigh Losses for Scene Geometry and Semantics", CVPR 2018), used by AANet."""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from fastreid.config import configurable
from torch import nn

from ..common import event_storage
from . import LOSS_REGISTRY


@LOSS_REGISTRY.register()
class UncertaintyLoss(nn.Module):
    """``forward({task: L_i})`` -> ``{task: 0.5 * exp(-s_i) * L_i + 0.5 * s_i}``, i.e.
    ``L_i / (2 sigma_i^2) + log sigma_i`` with ``s_i = log sigma_i^2`` a learned parameter
    (``log_vars``, initialised to ``init``). With ``enabled=False`` the losses pass unchanged (plain
    sum) and there are no parameters. Every task given must be one of ``tasks``; tasks missing
    from a call simply contribute nothing.

    Not a loss on tensors but a weighting of the model's task losses: a model builds it with
    ``build_loss(cfg, "UncertaintyLoss", tasks=[...], enabled=...)``.
    """

    @configurable
    def __init__(self, tasks: Sequence[str], enabled: bool = True, init: float = 0.0):
        super().__init__()
        self.tasks = list(tasks)
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"UncertaintyLoss: duplicate task names in {self.tasks}")
        self.enabled = bool(enabled)
        self.log_vars = nn.Parameter(torch.full((len(self.tasks),), float(init))) if self.enabled else None

    @classmethod
    def from_config(cls, cfg, tasks: Sequence[str], enabled: bool = True, init: float = 0.0):
        return {"tasks": tasks, "enabled": enabled, "init": init}

    def log_var(self, task: str) -> torch.Tensor:
        return self.log_vars[self.tasks.index(task)]

    def forward(self, losses: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        unknown = [t for t in losses if t not in self.tasks]
        if unknown:
            raise KeyError(f"UncertaintyLoss: unknown task(s) {unknown}; known: {self.tasks}")
        if not self.enabled:
            return dict(losses)
        out = {}
        for task, loss in losses.items():
            s = self.log_var(task)
            out[task] = 0.5 * torch.exp(-s) * loss + 0.5 * s
        return out

    @torch.no_grad()
    def log_to_storage(self, raw: Optional[Dict[str, torch.Tensor]] = None, prefix: str = "aanet/") -> bool:
        """Put ``log_var_<task>``, ``sigma_<task>`` (and ``raw_<task>``, the unweighted losses) into
        FastReID's active event storage; returns False (and does nothing) when none is active."""
        storage = event_storage()
        if storage is None:
            return False
        if self.enabled:
            for task, s in zip(self.tasks, self.log_vars.detach().cpu().tolist()):
                storage.put_scalar(f"{prefix}log_var_{task}", s, smoothing_hint=False)
                storage.put_scalar(f"{prefix}sigma_{task}", float(torch.exp(torch.tensor(s / 2))),
                                   smoothing_hint=False)
        for task, loss in (raw or {}).items():
            storage.put_scalar(f"{prefix}raw_{task}", float(loss.detach()))
        return True
