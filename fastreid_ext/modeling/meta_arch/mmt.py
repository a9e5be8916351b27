# encoding: utf-8
"""MMT: Mutual Mean-Teaching, four nets in one module, for unsupervised domain adaptation.

References
----------
* Ge, Chen, Li. "Mutual Mean-Teaching: Pseudo Label Refinery for Unsupervised Domain Adaptation on
  Person Re-identification", ICLR 2020 (reference code yxgeee/MMT, DBSCAN variant).
* Yu, Piao. "Reverse backbone net for unsupervised person re-identification", J. Jilin Univ. 2024,
  section 1.2, Figure 2, equations 5-11 (MMT + RBNet).

Paper element -> implementation
-------------------------------
* Net 1, Net 2 (theta_1, theta_2) and their mean nets E[theta_1], E[theta_2]: ``net1``, ``net2``,
  ``mean1``, ``mean2``, four instances of the meta-architecture ``MODEL.MMT.NET`` (FastReID's
  ``Baseline`` or ``RBNet``) built from the same config. The mean nets hold no gradient
  (``requires_grad`` False, so FastReID's optimizer and DDP skip them).
* Eq. 5-6, E^(T)[theta] = a E^(T-1)[theta] + (1 - a) theta: :meth:`MMT.update_mean_nets`, called
  after every optimizer step by :class:`fastreid_ext.uda.hooks.MeanTeacherHook` with MMT's warm-up
  a_t = min(1 - 1 / (t + 1), ``MODEL.MMT.ALPHA``) (0.999). Parameters only: the mean nets run in
  train mode during adaptation, so their BatchNorm statistics come from their own forwards (MMT).
  With RBNet the average covers the reverse backbone, the mask head and backbone 2 too (the seed:
  "backbone 2's parameters are averaged as well").
* Two differently augmented views x, x' of each target image (``images``, ``images2`` in the batch,
  :class:`fastreid_ext.data.uda.TwoViewDataset`): Net 1 and Mean Net 1 see x, Net 2 and Mean Net 2 see x'.
* Losses (weights ``MODEL.MMT.WEIGHTS``, MMT's defaults; each loss is a registered one, picked from
  ``MODEL.LOSSES.NAME`` by the tensors it reads):
  - hard identity: ``CrossEntropyLoss`` with label smoothing (``MODEL.LOSSES.CE.EPSILON`` 0.1) on the
    pseudo-labels, weight ``CE`` (0.5 = 1 - MMT's soft-CE weight);
  - hard triplet: ``TripletLoss``; ``MODEL.LOSSES.TRI.MARGIN 0`` is FastReID's soft margin
    softplus(d_ap - d_an), MMT's hard softmax-triplet, weight ``TRI`` (0.2);
  - soft identity (eq. 7-8): ``SoftCrossEntropyLoss`` of net i's logits against the peer mean net's
    softmax, weight ``SOFT_CE`` (0.5);
  - soft triplet (eq. 9-11): ``SoftTripletLoss``, net i's softmax over (d+, d-) against the peer mean
    net's on the same pairs, weight ``SOFT_TRI`` (0.8).
  The hard losses apply to every branch of a net (RBNet: backbone 1 and backbone 2, suffix ``2``);
  the soft losses to ``MODEL.MMT.SOFT_BRANCHES``: ``masked`` (default; RBNet's backbone-2 features of
  x * M(x), as eq. 7-11 write f(x . M(x)); a Baseline's only branch) or ``all``.
  The seed's eq. 11 prints the normaliser as exp(d+) - exp(d-); we read it as the softmax of MMT
  (exp(d+) + exp(d-)), the only form that is a probability.
* RBNet's keypoint loss during adaptation (``MODEL.MMT.KEYPOINTS``): ``source`` (default; the target has
  no keypoints) adds a labelled source batch of ``MODEL.MMT.SOURCE_IMS_PER_BATCH`` images per step whose
  heatmaps supervise both nets' reverse backbones (``loss_mse``, ``MODEL.RBNET.WEIGHTS.MSE``);
  ``target`` reads the target's own keypoint files (tools/make_keypoints.py run on it) for both views;
  ``none`` trains the reverse backbone through the identity losses only.
* Classifiers: one row per pseudo-label cluster, re-initialised every epoch from the L2-normalised
  cluster centroids of each branch's features for all four nets (:meth:`MMT.reset_classifiers`).
  Their size follows the clusters; a checkpoint's sizes are restored by :meth:`MMT.match_checkpoint_shapes`.
* Test (FastReID's contract: eval ``forward`` -> (B, D) feature): the net ``MODEL.MMT.TEST_NET``
  (``mean1``, default; MMT evaluates mean nets). Fixed in the config: the target's test set never picks it.
"""

from __future__ import annotations

import logging
from typing import Dict, List

import torch
import torch.nn.functional as F
from fastreid.config import configurable
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY
from torch import nn

from fastreid.modeling.losses import log_accuracy

from ..common import event_storage
from ..losses import build_losses, compute_losses

logger = logging.getLogger(__name__)

__all__ = ["MMT", "NETS", "net_config"]

#: the four nets, in the order of the paper's Figure 2
NETS = ("net1", "net2", "mean1", "mean2")
#: losses reading these tensors are MMT's soft losses (teacher = the peer's mean net)
_TEACHER_INPUTS = ("teacher_logits", "teacher_features")


def net_config(cfg):
    """The config of one of the four nets: ``cfg`` with ``MODEL.META_ARCHITECTURE = MODEL.MMT.NET``
    (also the config of source pre-training and of a mean net exported on its own)."""
    from ..losses import LOSS_REGISTRY

    c = cfg.clone()
    c.defrost()
    c.MODEL.META_ARCHITECTURE = cfg.MODEL.MMT.NET
    # a net on its own computes the hard losses only; the soft ones need the peer's mean net (MMT.forward)
    c.MODEL.LOSSES.NAME = tuple(n for n in cfg.MODEL.LOSSES.NAME if n not in LOSS_REGISTRY._obj_map
                                or not set(_TEACHER_INPUTS) & set(LOSS_REGISTRY.get(n).inputs))
    return c


def _branches(net: nn.Module, images: torch.Tensor, targets=None) -> dict:
    """Per-branch head outputs of one net on normalised ``images``: ``{"branches": [...], "heatmaps"}``.

    Training heads give dicts (``cls_outputs``, ``pred_class_logits``, ``features``); eval heads give
    the (B, D) feature. Baseline: one branch; RBNet: backbone 1 and backbone 2 on x * M(x).
    """
    if hasattr(net, "encode") and hasattr(net, "heads2"):  # RBNet
        enc = net.encode(images)
        b1 = net.heads(enc["feat"], targets) if net.training else net.heads(enc["feat"])
        f2 = net.backbone2(enc["masked"])
        b2 = net.heads2(f2, targets) if net.training else net.heads2(f2)
        return {"branches": [b1, b2], "heatmaps": enc["heatmaps"]}
    if hasattr(net, "backbone") and hasattr(net, "heads"):  # FastReID's Baseline and its kind
        feat = net.backbone(images)
        return {"branches": [net.heads(feat, targets) if net.training else net.heads(feat)], "heatmaps": None}
    raise TypeError(f"MODEL.MMT.NET {type(net).__name__} is not supported: MMT needs a net with backbone + heads "
                    "(FastReID's Baseline) or RBNet")


def _classifiers(net: nn.Module) -> List[nn.Module]:
    """The identity heads of a net, one per branch (RBNet: heads, heads2)."""
    return [h for h in (getattr(net, "heads", None), getattr(net, "heads2", None)) if h is not None]


@META_ARCH_REGISTRY.register()
class MMT(nn.Module):
    """Mutual Mean-Teaching over four nets (module docstring). Built from the config by
    ``MODEL.META_ARCHITECTURE: MMT`` with ``MODEL.MMT.NET`` naming the nets' meta-architecture."""

    @configurable
    def __init__(self, *, nets: Dict[str, nn.Module], losses: nn.ModuleDict, weights: Dict[str, float],
                 alpha: float = 0.999, test_net: str = "mean1", soft_branches: str = "masked",
                 mse_weight: float = 1.0):
        super().__init__()
        if test_net not in NETS:
            raise ValueError(f"MODEL.MMT.TEST_NET is {test_net!r}; use one of {NETS}")
        if soft_branches not in ("masked", "all"):
            raise ValueError(f"MODEL.MMT.SOFT_BRANCHES is {soft_branches!r}; use 'masked' or 'all'")
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"MODEL.MMT.ALPHA is {alpha}; the EMA momentum must be in [0, 1)")
        for name in NETS:
            setattr(self, name, nets[name])
        for name in ("mean1", "mean2"):
            for p in getattr(self, name).parameters():
                p.requires_grad_(False)
        self.loss_fns = losses
        self.weights = {k: float(v) for k, v in weights.items()}
        self.alpha = float(alpha)
        self.test_net = test_net
        self.soft_branches = soft_branches
        self.mse_weight = float(mse_weight)
        self.copy_to_mean_nets()

    @classmethod
    def from_config(cls, cfg):
        from fastreid.modeling.meta_arch import build_model

        m = cfg.MODEL.MMT
        if m.NET == "MMT":
            raise ValueError("MODEL.MMT.NET is the meta-architecture of the four nets (Baseline, RBNet), not MMT")
        ncfg = net_config(cfg)
        nets = {name: build_model(ncfg) for name in NETS}  # each on MODEL.DEVICE (FastReID's build_model)
        names = list(cfg.MODEL.LOSSES.NAME)
        losses = build_losses(cfg, [n for n in names if n != "KeypointMSELoss"])
        if not any(set(_TEACHER_INPUTS) & set(fn.inputs) for fn in losses.values()):
            logger.warning("MMT: MODEL.LOSSES.NAME %s has no soft loss (SoftCrossEntropyLoss, SoftTripletLoss): the "
                           "nets never learn from each other's mean nets", names)
        if hasattr(nets["net1"], "heads2") and "KeypointMSELoss" in getattr(nets["net1"], "loss_fns", {}):
            losses["KeypointMSELoss"] = nets["net1"].loss_fns["KeypointMSELoss"]
        w = m.WEIGHTS
        return {"nets": nets, "losses": losses,
                "weights": {"CE": w.CE, "TRI": w.TRI, "SOFT_CE": w.SOFT_CE, "SOFT_TRI": w.SOFT_TRI},
                "alpha": m.ALPHA, "test_net": m.TEST_NET, "soft_branches": m.SOFT_BRANCHES,
                "mse_weight": cfg.MODEL.RBNET.WEIGHTS.MSE}

    # ------------------------------------------------------------------ mean teachers (eq. 5-6)
    @property
    def device(self):
        return self.net1.device

    @torch.no_grad()
    def copy_to_mean_nets(self) -> None:
        """E^(0)[theta] = theta: the mean nets start as copies of their nets (parameters and buffers)."""
        for net, mean in (("net1", "mean1"), ("net2", "mean2")):
            getattr(self, mean).load_state_dict(getattr(self, net).state_dict())

    @staticmethod
    def ema_alpha(step: int, alpha: float) -> float:
        """MMT's warm-up: min(1 - 1 / (step + 1), alpha), step = optimizer steps taken so far."""
        return min(1.0 - 1.0 / (step + 1), alpha)

    @torch.no_grad()
    def update_mean_nets(self, step: int) -> float:
        """Eq. 5-6 on the parameters of both pairs; returns the alpha used."""
        a = self.ema_alpha(step, self.alpha)
        for net, mean in (("net1", "mean1"), ("net2", "mean2")):
            for pm, p in zip(getattr(self, mean).parameters(), getattr(self, net).parameters()):
                pm.mul_(a).add_(p.detach(), alpha=1.0 - a)
        return a

    # ------------------------------------------------------------------ classifiers (one row per cluster)
    def num_branches(self) -> int:
        return len(_classifiers(self.net1))

    @property
    def num_classes(self) -> int:
        return int(self.net1.heads.weight.shape[0])

    @torch.no_grad()
    def reset_classifiers(self, centroids: List[torch.Tensor]) -> None:
        """Every net's classifier of branch b := ``centroids[b]`` ((C, D_b), L2-normalised cluster
        centroids), C rows = the epoch's clusters. The Parameter objects stay (the optimizer keeps
        them); their optimizer state must be reset by the caller."""
        if len(centroids) != self.num_branches():
            raise ValueError(f"{len(centroids)} centroid sets for {self.num_branches()} branches")
        for name in NETS:
            for head, cent in zip(_classifiers(getattr(self, name)), centroids):
                if cent.shape[1] != head.weight.shape[1]:
                    raise ValueError(f"centroids of dimension {cent.shape[1]} for a classifier of "
                                     f"dimension {head.weight.shape[1]}")
                head.weight.grad = None
                head.weight.data = cent.detach().to(head.weight.device, head.weight.dtype).clone()
                if hasattr(head.cls_layer, "num_classes"):
                    head.cls_layer.num_classes = int(cent.shape[0])

    def match_checkpoint_shapes(self, state: dict) -> None:
        """Resize the classifiers to a checkpoint's (the number of clusters of its epoch), so that
        ``--resume`` and evaluation load an MMT checkpoint strictly."""
        sizes = []
        for b, head in enumerate(_classifiers(self.net1)):
            key = f"net1.{'heads' if b == 0 else 'heads2'}.weight"
            if key in state and state[key].shape[1:] == head.weight.shape[1:]:
                sizes.append(state[key].shape[0])
        if len(sizes) == self.num_branches() and sizes[0] != self.num_classes:
            self.reset_classifiers([self.net1.heads.weight.new_zeros(n, h.weight.shape[1])
                                    for n, h in zip(sizes, _classifiers(self.net1))])

    # ------------------------------------------------------------------ forward
    def _net(self, name: str, images: torch.Tensor, targets=None) -> dict:
        net = getattr(self, name)
        return _branches(net, net.preprocess_image({"images": images}), targets)

    def inference(self, batched_inputs) -> dict:
        """The test net's ``inference`` (features and its extras, e.g. RBNet's heatmaps and mask)."""
        from ...engine.inference import inference_outputs

        return inference_outputs(getattr(self, self.test_net), batched_inputs)

    @torch.no_grad()
    def branch_features(self, name: str, batched_inputs) -> List[torch.Tensor]:
        """Eval features of every branch of net ``name`` (the pseudo-label step's input)."""
        net = getattr(self, name)
        images = batched_inputs["images"] if isinstance(batched_inputs, dict) else batched_inputs
        return _branches(net, net.preprocess_image({"images": images}))["branches"]

    def forward(self, batched_inputs):
        if not self.training:
            return getattr(self, self.test_net)(batched_inputs)
        if not isinstance(batched_inputs, dict) or "images2" not in batched_inputs:
            raise ValueError("MMT trains on two views of each target image: the batch needs 'images' and 'images2' "
                             "(fastreid_ext.data.uda.TwoViewDataset, built by the UDA trainer)")
        targets = batched_inputs["targets"].to(self.device).long()
        views = {"net1": batched_inputs["images"], "net2": batched_inputs["images2"]}
        student = {n: self._net(n, views[n], targets) for n in ("net1", "net2")}
        with torch.no_grad():
            teacher = {m: self._net(m, views[n], targets) for n, m in (("net1", "mean1"), ("net2", "mean2"))}
        losses = {}
        for i, (net, peer_mean) in enumerate((("net1", "mean2"), ("net2", "mean1")), start=1):
            losses.update(self._losses(student[net], teacher[peer_mean], targets, suffix=f"_net{i}"))
        losses.update(self._keypoint_losses(batched_inputs, student))
        storage = event_storage()
        if storage is not None:
            log_accuracy(student["net1"]["branches"][0]["pred_class_logits"].detach(), targets)
        return losses

    def _losses(self, out: dict, teacher: dict, targets, suffix: str) -> Dict[str, torch.Tensor]:
        n = len(out["branches"])
        soft = range(n) if self.soft_branches == "all" else [n - 1]
        losses = {}
        for b, (s, t) in enumerate(zip(out["branches"], teacher["branches"])):
            tensors = {"logits": s["cls_outputs"], "features": s["features"], "targets": targets,
                       "teacher_logits": t["pred_class_logits"], "teacher_features": t["features"]}
            hard = {k: fn for k, fn in self.loss_fns.items()
                    if not set(_TEACHER_INPUTS) & set(fn.inputs) and set(fn.inputs) <= set(tensors)}
            w = {k: self.weights["CE" if "logits" in fn.inputs else "TRI"] for k, fn in hard.items()}
            tag = ("2" if b == 1 else "") + suffix  # RBNet's backbone 2: loss_cls2_net1, ...
            losses.update(compute_losses(hard, tensors, suffix=tag, weights=w))
            if b in soft:
                sft = {k: fn for k, fn in self.loss_fns.items() if set(_TEACHER_INPUTS) & set(fn.inputs)}
                w = {k: self.weights["SOFT_CE" if "teacher_logits" in fn.inputs else "SOFT_TRI"] for k, fn in sft.items()}
                tensors["logits"] = s["pred_class_logits"]
                losses.update(compute_losses(sft, tensors, suffix=tag, weights=w))
        return losses

    def _keypoint_losses(self, batch: dict, student: dict) -> Dict[str, torch.Tensor]:
        """RBNet's eq. 3 during adaptation: on the target's own heatmaps (both views) when the batch has
        them, and on the source batch (``batch["source"]``) when ``MODEL.MMT.KEYPOINTS`` is ``source``."""
        fn = self.loss_fns["KeypointMSELoss"] if "KeypointMSELoss" in self.loss_fns else None
        if fn is None:
            return {}
        out = {}
        if "heatmaps" in batch:
            for i, (net, sfx) in enumerate((("net1", ""), ("net2", "2")), start=1):
                hm = batch["heatmaps" + sfx].to(self.device)
                kp = batch["keypoints" + sfx].to(self.device)
                out[f"loss_mse_target_net{i}"] = self.mse_weight * fn(pred_heatmaps=student[net]["heatmaps"],
                                                                      heatmaps=hm, keypoints=kp)
        if "source" in batch:
            src = batch["source"]
            for i, net in enumerate(("net1", "net2"), start=1):
                model = getattr(self, net)
                pred = model.encode(model.preprocess_image(src))["heatmaps"]
                out[f"loss_mse_source_net{i}"] = self.mse_weight * fn(
                    pred_heatmaps=pred, heatmaps=src["heatmaps"].to(self.device),
                    keypoints=src["keypoints"].to(self.device))
        return out
