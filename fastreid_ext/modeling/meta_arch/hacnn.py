# encoding: utf-8
"""HA-CNN: Harmonious Attention Convolutional Neural Network, as FastReID components.

Reference
---------
Wei Li, Xiatian Zhu, Shaogang Gong. "Harmonious Attention Network for Person
Re-Identification". CVPR 2018 (arXiv:1802.08122).
Layer sizes follow the public reference layout of torchreid
(KaiyangZhou/deep-person-reid, ``torchreid/models/hacnn.py``); this file is an
independent implementation. With the default settings the feature extractor has
exactly 2,929,112 parameters, and 3,699,638 together with two 751-way identity
classifiers (Market-1501), the same counts as the reference layout.

Paper element -> implementation
-------------------------------
* Fig. 2, the overall two-branch network (stem conv, three Inception blocks each
  followed by a Harmonious Attention module, a global branch and a local branch
  of ``T`` = 4 regional streams): :class:`~fastreid_ext.modeling.backbones.hacnn.HACNN` (registered backbone
  builder :func:`~fastreid_ext.modeling.backbones.hacnn.build_hacnn_backbone`, in ``modeling/backbones/``); losses / test feature: :class:`HACNNReID`.
* The building blocks of Fig. 2 (Inception-A / Inception-B units, every conv
  being conv + BN + ReLU): :class:`ConvBlock`, :class:`InceptionA`,
  :class:`InceptionB`.
* Fig. 3 / Sec. 3.1, the Harmonious Attention module (soft + hard attention
  learned jointly from one input tensor): :class:`HarmAttn`.
* Sec. 3.1 (I), soft attention as the product of a spatial and a channel map,
  ``A = S x C``, followed by a 1x1 conv and a sigmoid: :class:`SoftAttn`.
* Sec. 3.1 (I.1), spatial attention: global cross-channel averaging, a 3x3 conv
  of stride 2, bilinear resizing back, a 1x1 "scaling" conv:
  :class:`SpatialAttn`.
* Sec. 3.1 (I.2), channel attention: squeeze (global average pooling) and
  excitation (two 1x1 convs with reduction 16): :class:`ChannelAttn`.
* Sec. 3.1 (II), hard regional attention: an affine transformation matrix per
  region ``[[s_w, 0, t_x], [0, s_h, t_y]]`` with fixed scales and learned
  translations (tanh-bounded), applied with a spatial-transformer sampler:
  :class:`HardAttn` (predicts ``theta``) and :meth:`HACNN.sample_regions`
  (builds the matrices and samples the regions).
* Sec. 3.2, cross-attention interaction: the regions of block ``l`` are sampled
  from the (attended) *global* feature map entering block ``l`` and are ADDED to
  the local stream's map of the previous block before the local Inception-B:
  :meth:`HACNN.forward`.
* Sec. 3.3 / test time: identity cross-entropy on the global and on the local
  512-d features; at test time the L2-normalised global and local features are
  concatenated (1024-d): :class:`HACNNReID`.

Choices the paper leaves open (made here, all documented)
---------------------------------------------------------
* Layer sizes, crop sizes, HardAttn initialisation, placement of BN/ReLU: the
  torchreid reference layout (parameter count reproduced exactly).
* The soft attention is ``sigmoid(ConvBlock(C, C, 1)(S * C))``; since ConvBlock
  ends with a ReLU the map lies in [0.5, 1) - kept as in the reference.
* Spatial attention resizing: bilinear, ``align_corners=False``, to exactly the
  input size (so odd sizes also work).
* HardAttn: ``theta = tanh(W * GAP(x) + b)`` with ``W = 0`` and ``b`` =
  (0, -0.75, 0, -0.25, 0, 0.25, 0, 0.75) at initialisation (reference values).
  NOTE: because of the tanh the *initial* translations are ``tanh(b)`` (region
  centres at y = +-0.635, +-0.245), not ``b`` itself; this reproduces the
  reference behaviour. For ``num_regions != 4`` the bias generalises to
  ``t_y = -1 + (2i + 1) / T`` and the height scale to ``1 / T`` (T=4 gives the
  published values).
* Region scales: width 1, height 1/T (0.25 for T = 4), fixed (not learned).
* Region sampling: ``F.affine_grid`` / ``F.grid_sample`` with
  ``align_corners=False``, zero padding, sampling the region DIRECTLY at the
  local stream's size: (H, W) = (24, 28) from the stem output, (12, 14) from
  the block-1 output, (6, 7) from the block-2 output. (The reference samples
  at the full map size and then bilinearly resizes to these sizes; the direct
  sampling is the spatial-transformer formulation of the paper and avoids a
  second interpolation; it has no parameters.)
* Accepted input size: exactly 160 x 64 (H x W), the paper's size. The local
  crop sizes above are tied to it, so any other size raises a ``ValueError``
  (also at build time, from ``cfg.INPUT.SIZE_TRAIN`` / ``SIZE_TEST``).
* Initialisation: convs Kaiming-normal (fan_out, relu), BN weight 1 / bias 0,
  embedding Linears Kaiming-normal (fan_out) with zero bias, identity
  classifiers normal(std=0.001) with zero bias; HardAttn as above.
* Options (config ``MODEL.HACNN``): ``USE_LOCAL=False`` drops the local branch
  and the hard attention (test feature = normalised global 512-d);
  ``LEARN_REGION=False`` keeps the local branch but freezes the regions at their
  initial position (no HardAttn Linear; theta is a constant buffer).
* Training losses: cross-entropy (FastReID's ``cross_entropy_loss``, with its
  label smoothing options) on both branches; optional batch-hard/soft triplet
  loss (FastReID's ``triplet_loss``) on the 512-d training features of both
  branches. Identity accuracy of the global classifier is logged only when a
  FastReID ``EventStorage`` is active.
"""

from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from fastreid.config import configurable
from fastreid.modeling.backbones.build import BACKBONE_REGISTRY
from fastreid.modeling.losses import log_accuracy
from fastreid.modeling.meta_arch.build import META_ARCH_REGISTRY

from ..backbones.hacnn import HACNN
from ..common import ReidMetaArch, event_storage
from ..losses import build_losses, check_loss_inputs, compute_losses

__all__ = ["HACNNReID"]

# --------------------------------------------------------------------------- #
# Meta-architecture
# --------------------------------------------------------------------------- #
@META_ARCH_REGISTRY.register()
class HACNNReID(ReidMetaArch):
    """HA-CNN re-id model: :class:`HACNN` + identity classifiers + losses.

    ``forward(batched_inputs)``: ``batched_inputs`` is a dict with ``images``
    (B,3,160,64), float 0-255 (a bare tensor is also accepted), and in training
    ``targets`` (B,) long. The input is not modified.

    * training: every loss of ``MODEL.LOSSES.NAME`` (registry,
      :mod:`fastreid_ext.modeling.losses`) on each branch, as ``loss_<key>_global`` and
      ``loss_<key>_local`` (e.g. ``loss_cls_global``, ``loss_triplet_local``); a branch provides
      ``logits`` (its identity classifier), ``features`` (its 512-d feature) and ``targets``; the
      ``*_local`` entries only with the local branch;
    * eval: (B, 2*feat_dim) = [L2-normalised global, L2-normalised local]
      (only the normalised global feature when ``use_local=False``); :meth:`inference` also gives the
      soft attention maps and the hard-attention regions (the picture tool's input).
    """

    #: tensors a branch provides to the losses
    LOSS_INPUTS = ("logits", "features", "targets")

    @configurable
    def __init__(
        self,
        *,
        backbone: HACNN,
        num_classes: int,
        pixel_mean,
        pixel_std,
        losses: nn.ModuleDict,
        feat_dim: int = 512,
    ):
        super().__init__(pixel_mean, pixel_std)
        if not isinstance(backbone, HACNN):
            raise ValueError(f"HACNNReID needs a HACNN backbone (build_hacnn_backbone), got {type(backbone).__name__}")
        if int(feat_dim) != backbone.feat_dim:
            raise ValueError(f"feat_dim ({feat_dim}) differs from the backbone's feat_dim ({backbone.feat_dim})")
        num_classes = int(num_classes)
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        check_loss_inputs("HACNNReID", losses, self.LOSS_INPUTS)

        self.backbone = backbone
        self.num_classes = num_classes
        self.feat_dim = int(feat_dim)
        if num_classes > 0:
            self.classifier_global = nn.Linear(self.feat_dim, num_classes)
            self.classifier_local = nn.Linear(self.feat_dim, num_classes) if backbone.use_local else None
        else:  # inference-only model (no identity classifiers)
            self.classifier_global = self.classifier_local = None
        for m in (self.classifier_global, self.classifier_local):
            if m is not None:
                nn.init.normal_(m.weight, std=0.001)
                nn.init.zeros_(m.bias)
        self.loss_fns = losses

    @classmethod
    def from_config(cls, cfg):
        backbone_name = cfg.MODEL.BACKBONE.NAME
        if backbone_name != "build_hacnn_backbone":
            raise ValueError(
                f"HACNNReID requires cfg.MODEL.BACKBONE.NAME = 'build_hacnn_backbone', got '{backbone_name}'"
            )
        backbone = BACKBONE_REGISTRY.get(backbone_name)(cfg)
        return {
            "backbone": backbone,
            "num_classes": cfg.MODEL.HEADS.NUM_CLASSES,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "feat_dim": backbone.feat_dim,
            "losses": build_losses(cfg),
        }

    def inference(self, batched_inputs) -> Dict[str, object]:
        """Eval outputs: ``{"features": (B, D) retrieval feature (what ``forward`` returns in eval),
        "soft_attention": the 3 soft attention maps [(B, C_l, H_l, W_l)], "regions": the 3 blocks'
        hard-attention translations [(B, T, 2)] (``None`` entries without the local branch)}``.
        The maps are kept from the same forward pass (no extra computation)."""
        feats = self.backbone(self.preprocess_image(batched_inputs), return_attention=True)
        f_global = F.normalize(feats["global"], p=2, dim=1)
        if feats["local"] is not None:
            f_global = torch.cat([f_global, F.normalize(feats["local"], p=2, dim=1)], dim=1)
        return {"features": f_global, "soft_attention": feats["soft_attn"], "regions": feats["theta"]}

    def forward(self, batched_inputs):
        if not self.training:
            return self.inference(batched_inputs)["features"]
        if self.classifier_global is None:
            raise ValueError("HACNNReID: cannot train with num_classes = 0 (cfg.MODEL.HEADS.NUM_CLASSES)")
        targets = self.training_targets(batched_inputs)
        feats = self.backbone(self.preprocess_image(batched_inputs))
        return self.compute_losses(feats["global"], feats["local"], targets)

    def compute_losses(self, f_global, f_local, targets) -> Dict[str, torch.Tensor]:
        """Every configured loss on the global branch and, when present, the local branch."""
        logits_global = self.classifier_global(f_global)
        if event_storage() is not None:
            log_accuracy(logits_global.detach(), targets)
        loss_dict = compute_losses(self.loss_fns, {"logits": logits_global, "features": f_global,
                                                 "targets": targets}, suffix="_global")
        if f_local is not None:
            loss_dict.update(compute_losses(self.loss_fns, {"logits": self.classifier_local(f_local),
                                                          "features": f_local, "targets": targets},
                                            suffix="_local"))
        return loss_dict
