# encoding: utf-8
"""RBNet: the reverse backbone net, keypoint-supervised, whose mask steers a second backbone.

Reference
---------
Yu Peng, Piao Yan. "Reverse backbone net for unsupervised person re-identification" (in Chinese).
Journal of Jilin University (Engineering and Technology Edition) 54(11):3309-3317, 2024.
DOI 10.13229/j.cnki.jdxbgxb.20240916. No code from the authors exists; this is an implementation from
the paper (section 1.1, Table 1, equations 1-4, Table 2) on FastReID's backbones, heads, losses and
trainer. The decoder layers are :mod:`fastreid_ext.modeling.layers.reverse_backbone`.

Paper element -> implementation
-------------------------------
* Backbone ("骨干网", ResNet-50 in the paper): FastReID's ``build_backbone`` (any ResNet depth;
  ``MODEL.BACKBONE.DEPTH`` 50x in ``configs/*/rbnet_R50.yml``, 18x in the CPU configs), run stage by
  stage (:func:`resnet_stages`) so that conv1 and layer1..layer4 outputs feed the decoder.
* change_channel (1x1 conv + ReLU) from every stage into the matching re-layer; re-layers 1-4 with
  2, 3, 5, 2 blocks (Table 1; ``MODEL.RBNET.RELAYER_BLOCKS``, default one fewer than the backbone's
  blocks per stage, so ResNet-18 gets 1, 1, 1, 1) that upsample bilinearly where the backbone
  downsampled: :class:`ReverseBackbone`.
* re-conv-1: multi-scale decoder maps fused by a grouped 1x1 convolution into 17 groups, one per
  COCO keypoint (:class:`KeypointFusion`); levels ``MODEL.RBNET.FUSE_LEVELS``, default conv1 +
  re-layer-1 (the paper: "fusing only the bottom conv1 and layer1 beats fusing all layers").
* Eq. 3, L_MSE between re-conv-1's 17 maps and keypoint heatmaps, shape (-1, 17, 128, 64) for a
  256x128 input: the registered ``KeypointMSELoss`` (``loss_mse``), joints with visibility 0
  (unlabelled, off-image, erased, or below the pose tool's score threshold) masked.
* Mask M(x) from re-layer-1 (``MODEL.RBNET.MASK_SOURCE``: ``relayer1``, the paper's best;
  ``conv1`` = re-conv-1's grouped input at the stem's grid; ``relayer2``), brought to the input by a
  change-channel block to one channel (+ ReLU) and bilinear upsampling (:class:`MaskHead`);
  backbone 2 (its own weights, FastReID's ``build_backbone`` again) sees x * M(x) (eq. 1-2's
  f(x . M(x))). Gradients of backbone 2's losses reach the mask, the decoder and backbone 1.
* Each backbone has FastReID's head (``MODEL.HEADS``, EmbeddingHead in the configs): ``heads`` and
  ``heads2``, so ``SOLVER.HEADS_LR_FACTOR`` applies to both.
* Eq. 4, L = l1 L_id + l2 L_tri + l3 L_mse + l4 L_id2 + l5 L_tri2, triplet margin 0.3: every loss of
  ``MODEL.LOSSES.NAME`` (registry) is computed on each branch that provides its inputs; losses reading
  ``logits`` are weighted l1 (backbone 1) / l4 (backbone 2), those reading ``features`` l2 / l5, and
  ``KeypointMSELoss`` (added when a stock config does not list it) l3; weights ``MODEL.RBNET.WEIGHTS``,
  on top of each loss's own SCALE. Keys: ``loss_cls``, ``loss_triplet`` (backbone 1, FastReID's
  Baseline names), ``loss_cls2``, ``loss_triplet2`` (backbone 2), ``loss_mse``.
* "l3 is tuned so that l3 L_mse is close to l2 L_tri": ``MODEL.RBNET.MSE_WEIGHT_MODE
  match_triplet`` sets l3 = EMA(l2 L_tri) / EMA(L_mse) (running means of backbone 1's detached
  triplet term and of the keypoint loss, momentum ``MSE_WEIGHT_MOMENTUM``, kept in a buffer so that
  ``--resume`` continues them, clamped to [1, 1e6]); ``fixed`` (default) uses ``WEIGHTS.MSE``.

Choices the paper leaves open (made here)
-----------------------------------------
* Heatmap resolution: eq. 3 (half the input, 128x64) is followed; Table 1 draws re-conv-1 at the full
  input size. ``MODEL.RBNET.HEATMAP_STRIDE 1`` gives Table 1's version (set ``INPUT.HEATMAP.SIZE`` to
  the input size then).
* Decoder stream and change-channel outputs are added (the paper says "fused"); a re-layer's blocks are
  bottlenecks with a depthwise 3x3 (the paper mentions depthwise-separable convolutions for cost).
* Mask range: ReLU, unbounded above, initialised to ~1 everywhere (bias 1, tiny weights), so backbone 2
  starts from the unmasked image and the mask moves only as far as the losses ask.
* Retrieval feature (``MODEL.RBNET.TEST_FEATURE``): ``both`` (default) = [backbone 1, backbone 2]
  embeddings (FastReID's head output, the BN-neck feature), each L2-normalised, concatenated (2 x D).
  Reason: the paper trains both branches with identity + triplet losses and does not say which
  one it ranks with; backbone 2's masked view and backbone 1's full view are complementary, and the
  concatenation never needs the user to know which one a dataset favours. ``backbone1`` /
  ``backbone2`` give either alone (D). In domain adaptation the paper uses backbone 2's (masked)
  features for the soft labels.
* Keypoint targets: Gaussian heatmaps (sigma ``INPUT.HEATMAP.SIGMA`` = 2 heatmap pixels, mmpose's
  MSRA codec) rendered from the keypoint files after every augmentation, or a pose model's own stored
  heatmaps (``INPUT.HEATMAP.SOURCE stored``); :mod:`fastreid_ext.data.keypoints`.
"""

from __future__ import annotations

import logging
from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from fastreid.config import configurable
from fastreid.modeling.backbones import build_backbone
from fastreid.modeling.heads import build_heads
from fastreid.modeling.losses import log_accuracy
from fastreid.modeling.meta_arch.build import META_ARCH_REGISTRY

from ..common import ReidMetaArch, event_storage
from ..layers.reverse_backbone import MaskHead, ReverseBackbone, resnet_stages, stage_channels
from ..losses import build_losses, check_loss_inputs, compute_losses

logger = logging.getLogger(__name__)

__all__ = ["RBNet"]

MASK_SOURCES = ("relayer1", "conv1", "relayer2")
TEST_FEATURES = ("both", "backbone1", "backbone2")


@META_ARCH_REGISTRY.register()
class RBNet(ReidMetaArch):
    """RBNet re-id model (see the module docstring for the paper-to-code map).

    ``forward(batched_inputs)``: a dict with ``images`` (B,3,H,W) float 0-255 (a bare tensor in eval);
    in training also ``targets``, ``heatmaps`` (B,17,h,w) and ``keypoints`` (B,17,3) (the batch fields
    that ``INPUT.EXTRA_FIELDS: ["keypoints", "heatmaps"]`` adds). Training returns the loss dict; eval
    returns the (B, D) retrieval feature, and :meth:`inference` the dict ``features``, ``heatmaps``
    (decoder output), ``mask`` (B,1,H,W).
    """

    #: tensors RBNet provides to the losses (each backbone branch: logits, features, targets)
    LOSS_INPUTS = ("logits", "features", "targets", "pred_heatmaps", "heatmaps", "keypoints")

    @configurable
    def __init__(self, *, backbone: nn.Module, backbone2: nn.Module, decoder: ReverseBackbone, mask_head: MaskHead,
                 heads: nn.Module, heads2: nn.Module, pixel_mean, pixel_std, losses: nn.ModuleDict,
                 mask_source: str = "relayer1", test_feature: str = "both", weights: Dict[str, float] = None,
                 mse_weight_mode: str = "fixed", mse_weight_momentum: float = 0.99):
        super().__init__(pixel_mean, pixel_std)
        if mask_source not in MASK_SOURCES:
            raise ValueError(f"MODEL.RBNET.MASK_SOURCE is {mask_source!r}; use one of {MASK_SOURCES}")
        if test_feature not in TEST_FEATURES:
            raise ValueError(f"MODEL.RBNET.TEST_FEATURE is {test_feature!r}; use one of {TEST_FEATURES}")
        if mse_weight_mode not in ("fixed", "match_triplet"):
            raise ValueError(f"MODEL.RBNET.MSE_WEIGHT_MODE is {mse_weight_mode!r}; use 'fixed' or 'match_triplet'")
        check_loss_inputs("RBNet", losses, self.LOSS_INPUTS)
        self.backbone = backbone
        self.backbone2 = backbone2
        self.decoder = decoder
        self.mask_head = mask_head
        self.heads = heads
        self.heads2 = heads2
        self.loss_fns = losses
        self.mask_source = mask_source
        self.test_feature = test_feature
        w = {"ID": 1.0, "TRI": 1.0, "MSE": 1.0, "ID2": 1.0, "TRI2": 1.0, **(weights or {})}
        self.weights = {k: float(v) for k, v in w.items()}
        self.mse_weight_mode = mse_weight_mode
        self.mse_weight_momentum = float(mse_weight_momentum)
        # running means of backbone 1's triplet and keypoint losses (match_triplet); NaN = not started
        self.register_buffer("loss_ema", torch.full((2,), float("nan")))

    @classmethod
    def from_config(cls, cfg):
        if not {"keypoints", "heatmaps"} <= set(cfg.INPUT.EXTRA_FIELDS):
            raise ValueError("RBNet learns keypoint heatmaps: set INPUT.EXTRA_FIELDS to include 'keypoints' and "
                             "'heatmaps' (keypoints come from <dataset folder>/keypoints/person_keypoints_<split>.json: "
                             "the synthetic sets have them, tools/make_keypoints.py writes them for real datasets)")
        rb = cfg.MODEL.RBNET
        backbone = build_backbone(cfg)
        channels = stage_channels(backbone)
        layer_blocks = [len(getattr(backbone, f"layer{k}")) for k in range(1, 5)]
        blocks = list(rb.RELAYER_BLOCKS) or [max(1, n - 1) for n in layer_blocks]
        decoder = ReverseBackbone(channels, blocks, fuse_levels=list(rb.FUSE_LEVELS),
                                  group_width=rb.GROUP_WIDTH, heatmap_stride=rb.HEATMAP_STRIDE)
        _check_heatmap_size(cfg, rb.HEATMAP_STRIDE)
        if rb.MASK_SOURCE not in MASK_SOURCES:
            raise ValueError(f"MODEL.RBNET.MASK_SOURCE is {rb.MASK_SOURCE!r}; use one of {MASK_SOURCES}")
        mask_channels = (decoder.fusion.conv.in_channels if rb.MASK_SOURCE == "conv1"
                         else decoder.level_channels[rb.MASK_SOURCE])
        names = list(cfg.MODEL.LOSSES.NAME)
        if "KeypointMSELoss" not in names:
            logger.info("RBNet: MODEL.LOSSES.NAME %s has no KeypointMSELoss; adding it (eq. 3)", names)
            names.append("KeypointMSELoss")
        return {
            "backbone": backbone,
            "backbone2": build_backbone(cfg),
            "decoder": decoder,
            "mask_head": MaskHead(mask_channels),
            "heads": build_heads(cfg),
            "heads2": build_heads(cfg),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "losses": build_losses(cfg, names),
            "mask_source": rb.MASK_SOURCE,
            "test_feature": rb.TEST_FEATURE,
            "weights": {k: rb.WEIGHTS[k] for k in ("ID", "TRI", "MSE", "ID2", "TRI2")},
            "mse_weight_mode": rb.MSE_WEIGHT_MODE,
            "mse_weight_momentum": rb.MSE_WEIGHT_MOMENTUM,
        }

    # ------------------------------------------------------------------ forward pieces
    def encode(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Backbone 1, the decoder and the mask on normalised images: ``stages`` (list of 5 maps),
        ``feat`` (backbone 1's last map), ``heatmaps``, ``mask`` (B,1,H,W), ``masked`` (x * M(x))."""
        stages = resnet_stages(self.backbone, images)
        dec = self.decoder(stages, images.shape[-2:])
        src = dec["fused"] if self.mask_source == "conv1" else dec[self.mask_source]
        mask = self.mask_head(src, images.shape[-2:])
        return {"stages": stages, "feat": stages[-1], "heatmaps": dec["heatmaps"], "mask": mask,
                "masked": images * mask}

    def inference(self, batched_inputs) -> Dict[str, torch.Tensor]:
        """Eval outputs: ``features`` (the retrieval feature, ``MODEL.RBNET.TEST_FEATURE``), ``heatmaps``
        (B,17,h,w) decoder output, ``mask`` (B,1,H,W) M(x)."""
        images = self.preprocess_image(batched_inputs)
        enc = self.encode(images)
        f1 = self.heads(enc["feat"]) if self.test_feature != "backbone2" else None
        f2 = self.heads2(self.backbone2(enc["masked"])) if self.test_feature != "backbone1" else None
        if self.test_feature == "both":
            feats = torch.cat([F.normalize(f1, dim=1), F.normalize(f2, dim=1)], dim=1)
        else:
            feats = f1 if f2 is None else f2
        return {"features": feats, "heatmaps": enc["heatmaps"], "mask": enc["mask"]}

    def forward(self, batched_inputs):
        if not self.training:
            return self.inference(batched_inputs)["features"]
        for key in ("heatmaps", "keypoints"):
            if isinstance(batched_inputs, dict) and key not in batched_inputs:
                raise ValueError(f"RBNet: the training batch has no '{key}'; add 'keypoints' and 'heatmaps' to "
                                 "INPUT.EXTRA_FIELDS")
        targets = self.training_targets(batched_inputs)
        heatmaps = self.batch_field(batched_inputs, "heatmaps")
        keypoints = self.batch_field(batched_inputs, "keypoints")
        images = self.preprocess_image(batched_inputs)
        enc = self.encode(images)
        if enc["heatmaps"].shape != heatmaps.shape:
            raise ValueError(f"RBNet: the decoder gives heatmaps {tuple(enc['heatmaps'].shape[1:])} but the batch has "
                             f"{tuple(heatmaps.shape[1:])}: INPUT.HEATMAP.SIZE must be the input size / "
                             "MODEL.RBNET.HEATMAP_STRIDE (or [0, 0] for stride 2)")
        out1 = self.heads(enc["feat"], targets)
        out2 = self.heads2(self.backbone2(enc["masked"]), targets)
        return self.compute_losses(out1, out2, enc, heatmaps, keypoints, targets)

    # ------------------------------------------------------------------ losses (eq. 4)
    def mse_weight(self, tri_term: torch.Tensor | None, mse: torch.Tensor) -> float:
        """l3: ``WEIGHTS.MSE`` (fixed), or EMA(l2 L_tri) / EMA(L_mse) (``match_triplet``; the running means
        move in training only) so that l3 L_mse stays close to backbone 1's triplet term."""
        if self.mse_weight_mode == "fixed" or tri_term is None:
            return self.weights["MSE"]
        with torch.no_grad():
            if self.training:
                now = torch.stack([tri_term.detach().float(), mse.detach().float()])
                m = self.mse_weight_momentum
                self.loss_ema.copy_(torch.where(torch.isnan(self.loss_ema), now, m * self.loss_ema + (1 - m) * now))
            tri_ema, mse_ema = (float(v) for v in self.loss_ema)
        if not (mse_ema > 0 and tri_ema == tri_ema):  # not started, or a zero keypoint loss
            return self.weights["MSE"]
        return min(max(tri_ema / mse_ema, 1.0), 1e6)

    def compute_losses(self, out1, out2, enc, heatmaps, keypoints, targets) -> Dict[str, torch.Tensor]:
        """Eq. 4: l1, l2 on backbone 1's losses, l4, l5 on backbone 2's (suffix ``2``), l3 on the keypoint MSE."""
        storage = event_storage()
        if storage is not None:
            log_accuracy(out1["pred_class_logits"].detach(), targets)
            storage.put_scalar("rbnet/cls_accuracy2",
                               float((out2["pred_class_logits"].detach().argmax(1) == targets).float().mean()))
        kp_losses = {n: fn for n, fn in self.loss_fns.items() if "pred_heatmaps" in fn.inputs}
        id_losses = {n: fn for n, fn in self.loss_fns.items() if n not in kp_losses}

        def branch(out, id_w, tri_w, suffix):
            weights = {n: (id_w if "logits" in fn.inputs else tri_w) for n, fn in id_losses.items()}
            tensors = {"logits": out["cls_outputs"], "features": out["features"], "targets": targets}
            return compute_losses(id_losses, tensors, suffix=suffix, weights=weights)

        losses = branch(out1, self.weights["ID"], self.weights["TRI"], "")
        losses.update(branch(out2, self.weights["ID2"], self.weights["TRI2"], "2"))
        raw = compute_losses(kp_losses, {"pred_heatmaps": enc["heatmaps"], "heatmaps": heatmaps,
                                         "keypoints": keypoints})
        l3 = self.mse_weight(losses.get("loss_triplet"), raw["loss_mse"]) if "loss_mse" in raw else self.weights["MSE"]
        losses.update({k: v * l3 for k, v in raw.items()})
        if storage is not None:
            storage.put_scalar("rbnet/mse_weight", l3)
            storage.put_scalar("rbnet/mask_mean", float(enc["mask"].detach().mean()))
        return losses


def _check_heatmap_size(cfg, stride: int) -> None:
    """INPUT.HEATMAP.SIZE must be the decoder's output grid (input / stride); [0, 0] means input / 2."""
    H, W = (int(v) for v in cfg.INPUT.SIZE_TRAIN)
    want = [H // stride, W // stride] if stride == 1 else [(H + 1) // 2, (W + 1) // 2]
    have = [int(v) for v in cfg.INPUT.HEATMAP.SIZE]
    if have == [0, 0] and stride == 2:
        return
    if have != want:
        raise ValueError(f"RBNet with MODEL.RBNET.HEATMAP_STRIDE {stride} predicts {want[0]}x{want[1]} heatmaps for "
                         f"INPUT.SIZE_TRAIN {H}x{W}, but INPUT.HEATMAP.SIZE is {have}: set it to {want}"
                         + (" or [0, 0]" if stride == 2 else ""))
