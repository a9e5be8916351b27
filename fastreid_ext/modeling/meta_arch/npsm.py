# encoding: utf-8
"""NPSM: the Neural Person Search Machine, person search in whole frames by query-guided region shrinkage.

Reference
---------
Hao Liu, Jiashi Feng, Zequn Jie, Karlekar Jayashree, Bo Zhao, Meibin Qi, Jianguo Jiang, Shuicheng Yan.
"Neural Person Search Machines". ICCV 2017. Seed 004 is a short Chinese summary of the paper; no code
from the authors was published and the paper leaves most sizes open, so every choice below is ours and
is named as such (config keys ``MODEL.NPSM.*``). The layers are :mod:`fastreid_ext.modeling.layers.npsm`.

Paper element -> implementation
-------------------------------
* **Primitive memory and IDNet: one ResNet split in two** (ResNet-50 in the paper; FastReID's
  ``build_backbone``, any depth). The early layers (stem .. ``MODEL.NPSM.SPLIT``, default ``layer2``,
  stride 8) give the frame's and the query's maps; the late layers (the rest .. layer4) + FastReID's head
  (BN-neck, ``MODEL.HEADS``) give the re-id feature of a region. Our choice of ``layer2``: people in
  surveillance frames are 40-150 px tall, 5-19 cells at stride 8 but 2-9 at stride 16 (``layer3``, also
  accepted).
* **ROI pooling to K x K** ("a ROI pooling of our own, K x K x D"): torchvision's ``roi_align`` (aligned
  corners, 2 samples per bin) of the frame's early map over the current region, ``K = MODEL.NPSM.POOL_SIZE``
  (8). The region's re-id feature: the same ``roi_align`` to ``MODEL.NPSM.REID_POOL`` (the crop size /
  stride, 16 x 8 for 128 x 64 crops) through the late layers, so a region and a query crop of the same
  person give comparable features (a crop's early map is resized to ``REID_POOL`` when it differs).
* **Neural Search Network: a Conv-LSTM whose gates also read the query feature q**
  (:class:`~fastreid_ext.modeling.layers.npsm.QueryConvLSTMCell`, hidden ``MODEL.NPSM.HIDDEN`` channels).
  ``q`` = the query crop's early map, average-pooled (the summary: "the query through part 1 of the
  primitive memory"); it is the same at every step. Our addition (``MODEL.NPSM.SIMILARITY_INPUT``): one
  more input channel, the cosine similarity of the frame with the query, ROI-aligned over the region
  like the early map. ``reid`` (default): the late layers run over the whole frame (no gradient, BN in
  eval mode) against the query's pooled late-layer feature, so the search can use what the identity
  loss teaches; ``early``: the same on the early map; ``none``: the paper's cell alone. Measured on the
  synthetic scenes: with ``early`` (and no ``GAIN``), 300 steps from scratch gave every query of a frame the
  same trajectory.
* **Attention** = a 1x1 convolution of ``h_t`` to one K x K map, 2-D softmax
  (:func:`~fastreid_ext.modeling.layers.npsm.spatial_softmax`). ``MODEL.NPSM.GAIN`` (10, our choice)
  multiplies the attention logits and the similarity channel: Adam moves a weight by about the learning
  rate per step, and at FastReID's 3.5e-4 the search's few weights could not make the attention peaked
  within a CPU-sized run (measured: README).
* **Region shrinkage over clustered proposals**: the proposals whose centres lie in the current region
  are clustered by their centres (Euclidean, k-means, ``MODEL.NPSM.CLUSTERS`` clusters); each cluster's
  union box, clipped to the region, is a sub-region
  (:func:`~fastreid_ext.modeling.layers.npsm.cluster_subregions`); the next region is the sub-region of
  highest mean attention (:func:`~fastreid_ext.modeling.layers.npsm.region_attention`;
  ``MODEL.NPSM.SUBREGION_SCORE mean``, the paper's rule) or, our choice in ``configs/Base-NPSM.yml``
  (``mass``), of highest attention mass less ``AREA_WEIGHT`` x its share of the region's area
  (:meth:`NPSM.subregion_logits`). Reason, measured on the synthetic scenes (README): the mean favours
  the smallest sub-region on the attention's peak, which cuts the person; with one set of trained
  weights, the person stays whole after steps 1 / 2 / 3 in 60 / 21 / 6 % of the pairs with the mean and
  69 / 65 / 60 % with the mass, and search mAP / top-1 go from 9.4 / 20.0 (trained and tested with the
  mean) to 32.4 / 60.0. ``MODEL.NPSM.STEPS`` steps in all (the paper does not give the number; a region
  that cannot shrink any more is kept). The first region is the whole frame. Proposals: selective search
  (:mod:`fastreid_ext.data.search.proposals`).
* **The final step** (``MODEL.NPSM.FINAL_STEP proposals``, our choice): its candidates are the region's
  proposals themselves (clusters of one, :func:`~fastreid_ext.modeling.layers.npsm.region_proposals`),
  scored by the **soft IoU** of each with the attention read as a mask
  (:func:`~fastreid_ext.modeling.layers.npsm.soft_iou`; the mean attention would pick the smallest box on
  the peak). Reason, measured on the synthetic scenes with the ground truth steering (``/tmp``-style
  oracle, README): unions of clusters reach IoU >= 0.5 with the person for 58 % of the people (4
  clusters, 4 steps); ending on a proposal, for 79-81 %. ``clusters`` keeps the paper's rule to the end.
* **Losses**: identity loss (IDNet: FastReID's CrossEntropyLoss; any registered loss reading
  ``logits`` / ``features`` / ``targets``) on the **final region's** feature, plus the registered
  ``BoxInsideLoss`` (:mod:`fastreid_ext.modeling.losses.search`): ground-truth pixels left outside the
  chosen region, in expectation over each step's sub-regions under the softmax of their scores (the
  summary's 0-1 loss made differentiable; at the final step the cost is 1 - IoU), plus the KL divergence of
  the attention from the uniform distribution over the ground-truth box (the same loss read at the
  attention map: dense, so it trains, and it spreads the attention over the whole person, which the
  final step's soft IoU reads; a plain "mass outside the box" term let the attention sit on the torso and
  the final step then chose torso-sized proposals, pictures in README).
  Our choices: the same identity losses on the query crop (``MODEL.NPSM.QUERY_ID_WEIGHT``, 1: the crop is
  a clean sample of the person), and **teacher forcing** in training: the region followed to the next
  step is the sub-region that leaves the least of the ground-truth box outside (ties: the smaller; the
  final step: the highest IoU), so every step is trained on a region that holds the person and the final
  region's identity loss sees the person; at test the attention chooses.

Inputs and outputs
------------------
* Training batch (:mod:`fastreid_ext.data.search.loader`): ``images`` (F,3,H,W) frames, ``proposals``
  [F x (K_f, 4)] x1y1x2y2 in the frames' pixels, and per (frame, person) pair: ``query_images`` (P,3,h,w)
  crops of the person from another frame, ``gt_boxes`` (P,4) the person's box in the frame, ``targets``
  (P,), ``pairs`` (P,2) = (pair row, frame row). Returns the loss dict.
* Search batch (eval): ``images`` (F,3,H,W), ``proposals`` [F x (K_f, 4)], ``query_images`` (Q,3,h,w),
  ``pairs`` (P,2) = (query row, frame row). :meth:`inference` returns ``features`` (P,D) final-region
  features, ``query_features`` (Q,D), ``scores`` (P,) cosine(region, its query), ``boxes`` (P,4) final
  regions, ``trajectory`` (P,T+1,4) every step's region, ``attention`` (P,T,K,K); eval ``forward`` returns
  ``features``.
* A plain crop batch (``images`` only; FastReID's re-id contract, ``DefaultPredictor``, export): the
  crops' re-id features (B,D), the region feature of the whole crop.
"""

from __future__ import annotations

import logging
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_iou, roi_align

from fastreid.config import configurable
from fastreid.modeling.backbones import build_backbone
from fastreid.modeling.heads import build_heads
from fastreid.modeling.losses import log_accuracy
from fastreid.modeling.meta_arch.build import META_ARCH_REGISTRY

from ..common import ReidMetaArch, event_storage
from ..layers.npsm import (QueryConvLSTMCell, box_attention_kl, box_outside_fraction, cluster_subregions,
                           region_attention, region_proposals, soft_iou, spatial_softmax)
from ..losses import build_losses, check_loss_inputs, compute_losses

logger = logging.getLogger(__name__)

__all__ = ["NPSM", "SPLITS", "FINAL_STEPS", "SUBREGION_SCORES"]

#: where the ResNet is split (primitive memory = stem .. SPLIT) and the stride of that map
SPLITS = {"layer2": 8, "layer3": 16}
#: the last step's candidates: the proposals themselves (clusters of one) or clusters like every step
FINAL_STEPS = ("proposals", "clusters")
#: the Conv-LSTM's extra input channel: similarity with the query of the late-layer ("reid") or early-layer map, or none
SIMILARITY_INPUTS = ("reid", "early", "none")
#: the shrinkage steps' sub-region score: the paper's mean attention, or the attention mass kept less an area cost
SUBREGION_SCORES = ("mean", "mass")
#: temperature of the final proposal choice's soft-IoU scores in the box-inside loss' softmax
FINAL_TEMPERATURE = 0.1


def _check_resnet(backbone: nn.Module) -> None:
    for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
        if not hasattr(backbone, name):
            raise ValueError(f"NPSM splits a ResNet-shaped backbone (conv1, bn1, maxpool, layer1-4: FastReID's "
                             f"build_resnet_backbone); {type(backbone).__name__} has no '{name}'")
    if any(getattr(backbone, f"NL_{k}_idx", []) and any(i >= 0 for i in getattr(backbone, f"NL_{k}_idx"))
           for k in range(1, 5)):
        raise ValueError("NPSM: MODEL.BACKBONE.WITH_NL is not supported (the split ResNet runs its layers one by one)")


@META_ARCH_REGISTRY.register()
class NPSM(ReidMetaArch):
    """NPSM person search model (see the module docstring for the paper-to-code map)."""

    #: a person-search model: trains on whole frames (ExtTrainer's search loaders)
    SEARCH = True
    #: tensors NPSM provides to the losses
    LOSS_INPUTS = ("logits", "features", "targets", "subregion_scores", "subregion_outside", "attention_misfit")

    @configurable
    def __init__(self, *, backbone: nn.Module, heads: nn.Module, pixel_mean, pixel_std, losses: nn.ModuleDict,
                 split: str = "layer2", steps: int = 4, clusters: int = 4, pool_size: int = 8,
                 reid_pool: Sequence[int] = (16, 8), hidden: int = 64, similarity_input: str = "reid",
                 max_area_fraction: float = 0.8, query_id_weight: float = 1.0, final_step: str = "proposals",
                 gain: float = 10.0, subregion_score: str = "mean", area_weight: float = 0.1):
        super().__init__(pixel_mean, pixel_std)
        if split not in SPLITS:
            raise ValueError(f"MODEL.NPSM.SPLIT is {split!r}; use one of {sorted(SPLITS)}")
        if final_step not in FINAL_STEPS:
            raise ValueError(f"MODEL.NPSM.FINAL_STEP is {final_step!r}; use one of {FINAL_STEPS}")
        if steps < 1 or clusters < 2 or pool_size < 2:
            raise ValueError(f"MODEL.NPSM: STEPS >= 1, CLUSTERS >= 2 and POOL_SIZE >= 2 needed, got {steps}, "
                             f"{clusters}, {pool_size}")
        check_loss_inputs("NPSM", losses, self.LOSS_INPUTS)
        self.backbone = backbone
        self.heads = heads
        self.loss_fns = losses
        _check_resnet(backbone)
        k = int(split[-1])
        # names of the backbone's modules in each half (names, not modules: no second copy in the state dict)
        self.early_names = ["conv1", "bn1", "relu", "maxpool"] + [f"layer{i}" for i in range(1, k + 1)]
        self.late_names = [f"layer{i}" for i in range(k + 1, 5)]
        self.split, self.stride = split, SPLITS[split]
        last = getattr(backbone, split)[-1]
        channels = (getattr(last, "conv3", None) or last.conv2).out_channels
        self.steps, self.clusters, self.pool_size = int(steps), int(clusters), int(pool_size)
        self.reid_pool = tuple(int(v) for v in reid_pool)
        if similarity_input not in SIMILARITY_INPUTS:
            raise ValueError(f"MODEL.NPSM.SIMILARITY_INPUT is {similarity_input!r}; use one of {SIMILARITY_INPUTS}")
        self.similarity_input = similarity_input
        if subregion_score not in SUBREGION_SCORES:
            raise ValueError(f"MODEL.NPSM.SUBREGION_SCORE is {subregion_score!r}; use one of {SUBREGION_SCORES}")
        self.subregion_score, self.area_weight = subregion_score, float(area_weight)
        self.max_area_fraction = float(max_area_fraction)
        self.query_id_weight = float(query_id_weight)
        self.final_step = final_step
        self.gain = float(gain)
        self.lstm = QueryConvLSTMCell(channels + int(similarity_input != "none"), hidden, channels)
        self.attention = nn.Conv2d(hidden, 1, 1)

    @classmethod
    def from_config(cls, cfg):
        n = cfg.MODEL.NPSM
        if n.SPLIT in SPLITS:
            want = [int(s) // SPLITS[n.SPLIT] for s in cfg.INPUT.SIZE_TEST]
            if list(n.REID_POOL) != want:
                logger.info("NPSM: MODEL.NPSM.REID_POOL %s differs from INPUT.SIZE_TEST / stride %s: query crops' "
                            "maps are resized to it", list(n.REID_POOL), want)
        return {
            "backbone": build_backbone(cfg),
            "heads": build_heads(cfg),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "losses": build_losses(cfg),
            "split": n.SPLIT,
            "steps": n.STEPS,
            "clusters": n.CLUSTERS,
            "pool_size": n.POOL_SIZE,
            "reid_pool": list(n.REID_POOL),
            "hidden": n.HIDDEN,
            "similarity_input": n.SIMILARITY_INPUT,
            "max_area_fraction": n.MAX_AREA_FRACTION,
            "query_id_weight": n.QUERY_ID_WEIGHT,
            "final_step": n.FINAL_STEP,
            "gain": n.GAIN,
            "subregion_score": n.SUBREGION_SCORE,
            "area_weight": n.AREA_WEIGHT,
        }

    # ------------------------------------------------------------------ the two halves of the ResNet
    def primitive_memory(self, images: torch.Tensor) -> torch.Tensor:
        """Early layers (stem .. SPLIT) of normalised images: (B, C, H/stride, W/stride)."""
        for name in self.early_names:
            images = getattr(self.backbone, name)(images)
        return images

    def late_layers(self, maps: torch.Tensor) -> torch.Tensor:
        """The late layers (SPLIT+1 .. layer4) of early maps."""
        for name in self.late_names:
            maps = getattr(self.backbone, name)(maps)
        return maps

    def reid_feature(self, pooled: torch.Tensor, targets: Optional[torch.Tensor] = None):
        """Late layers + head of (N, C, *REID_POOL) pooled maps: the head's training dict with ``targets``
        in training, the (N, D) feature in eval."""
        late = self.late_layers(pooled)
        return self.heads(late, targets) if self.training else self.heads(late)

    @torch.no_grad()
    def similarity_maps(self, maps: torch.Tensor, frame_index: torch.Tensor, q_reid: torch.Tensor):
        """(P, 1, h, w) cosine similarity of each location of frame ``frame_index[p]``'s late-layer map with
        query ``q_reid[p]`` (its pooled late-layer feature), both through the head's BN-neck when it has
        one, and the map's scale (map pixels per input pixel). Computed without gradients and with the
        late layers' and the head's BN in eval mode (frames must not move the running statistics of the
        crops' re-id features). Measured with a BoT R18 on the synthetic scenes: the similarity peak lies
        on the query's person in 35 % of the (query, frame showing it) pairs with the BN-neck, 2.4 %
        without (raw ReLU features are alike everywhere)."""
        late = [getattr(self.backbone, n) for n in self.late_names] + [self.heads]
        modes = [m.training for m in late]
        for m in late:
            m.eval()
        try:
            lm = self.late_layers(maps)
            qv = q_reid[:, :, None, None]
            bn = getattr(self.heads, "bottleneck", None)
            if bn is not None:  # the BN-neck centres both: raw ReLU features are alike everywhere
                lm, qv = bn(lm), bn(qv)
        finally:
            for m, t in zip(late, modes):
                m.train(t)
        sim = (F.normalize(lm, dim=1)[frame_index] * F.normalize(qv, dim=1)).sum(1, keepdim=True)
        return sim, lm.shape[-1] / (maps.shape[-1] * self.stride)

    def crop_maps(self, maps: torch.Tensor) -> torch.Tensor:
        """A whole crop's early map as a region of REID_POOL size (resized when it differs)."""
        if tuple(maps.shape[-2:]) == self.reid_pool:
            return maps
        return F.interpolate(maps, size=self.reid_pool, mode="bilinear", align_corners=False)

    def roi_pool(self, maps: torch.Tensor, frame_index: torch.Tensor, boxes: torch.Tensor, size,
                 spatial_scale: Optional[float] = None) -> torch.Tensor:
        """roi_align of ``boxes`` (N, 4, input pixels) on ``maps[frame_index]``: (N, C, *size); ``spatial_scale``
        = map pixels per input pixel (default: the early map's, 1 / stride)."""
        rois = torch.cat([frame_index.to(maps.dtype)[:, None], boxes.to(maps.dtype)], dim=1)
        scale = 1.0 / self.stride if spatial_scale is None else spatial_scale
        return roi_align(maps, rois, output_size=tuple(size), spatial_scale=scale, sampling_ratio=2, aligned=True)

    def region_scores(self, maps: torch.Tensor, frame_index: torch.Tensor, boxes: torch.Tensor,
                      q_feat: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(features (P, D), scores (P,)) of regions ``boxes`` on frames ``frame_index``: the re-id feature of
        each region and its cosine similarity with its query's feature ``q_feat`` (P, D)."""
        feats = self.reid_feature(self.roi_pool(maps, frame_index, boxes, self.reid_pool))
        return feats, (F.normalize(feats, dim=1) * F.normalize(q_feat, dim=1)).sum(1)

    # ------------------------------------------------------------------ the search (NSN + shrinkage)
    def subregion_logits(self, att: torch.Tensor, region: torch.Tensor, subs: torch.Tensor) -> torch.Tensor:
        """Scores of a shrinkage step's sub-regions (M,), as logits (the argmax is the choice at test, the
        softmax the box-inside loss' distribution). ``mean`` (the paper): mean attention x K*K (1 = uniform).
        ``mass`` (our choice): (attention mass inside - AREA_WEIGHT x area share of the region) /
        FINAL_TEMPERATURE; with the attention trained to cover the person's box evenly, the mass is the
        share of the person a sub-region keeps, where the mean favours the smallest sub-region on the peak
        and so cuts the person; the area term breaks ties towards the smaller of two that keep it all."""
        if self.subregion_score == "mean":
            return region_attention(att, region, subs) * self.pool_size ** 2
        area = (subs[:, 2] - subs[:, 0]) * (subs[:, 3] - subs[:, 1])
        share = area / ((region[2] - region[0]) * (region[3] - region[1])).clamp_min(1e-12)
        return (region_attention(att, region, subs, reduce="sum") - self.area_weight * share.to(att)) / FINAL_TEMPERATURE

    def search(self, maps: torch.Tensor, proposals: Sequence[torch.Tensor], q: torch.Tensor,
               frame_index: torch.Tensor, frame_hw: Tuple[int, int], gt_boxes: Optional[torch.Tensor] = None,
               similarity=None) -> Dict[str, object]:
        """Shrink a region over ``STEPS`` steps for each pair (query vector ``q[i]``, frame
        ``frame_index[i]``). ``gt_boxes`` given: teacher forcing (module docstring), and the sub-regions'
        scores and outside fractions for the box-inside loss are returned. Returns ``regions`` (P, T+1, 4),
        ``attention`` (P, T, K, K) and, with ``gt_boxes``, ``subregion_scores`` / ``subregion_outside``
        (rows = (pair, step) with >= 2 sub-regions, padded with -inf / 0)."""
        p = len(q)
        h, w = frame_hw
        region = maps.new_tensor([0.0, 0.0, float(w), float(h)]).expand(p, 4).clone()
        props = [pr.to(torch.float32).cpu() for pr in proposals]
        if self.similarity_input == "reid" and similarity is None:
            raise ValueError("NPSM.search with SIMILARITY_INPUT 'reid' needs the similarity maps (similarity_maps)")
        cache: Dict[Tuple[int, Tuple[float, ...]], torch.Tensor] = {}
        regions, attentions, scores_rows, outside_rows, att_misfit = [region], [], [], [], []
        state = None
        qn = F.normalize(q, dim=1)[:, :, None, None]
        for t in range(self.steps):
            final = t == self.steps - 1 and self.final_step == "proposals"
            x = self.roi_pool(maps, frame_index, region, (self.pool_size, self.pool_size))
            if self.similarity_input == "early":
                x = torch.cat([x, self.gain * (F.normalize(x, dim=1) * qn).sum(1, keepdim=True)], dim=1)
            elif self.similarity_input == "reid":  # one similarity map per pair
                sim, scale = similarity
                pooled = self.roi_pool(sim, torch.arange(p, device=sim.device), region, (self.pool_size,) * 2, scale)
                x = torch.cat([x, self.gain * pooled.to(x)], dim=1)
            state = self.lstm(x, state, q)
            att = spatial_softmax(self.gain * self.attention(state[0])[:, 0])
            if gt_boxes is not None:  # KL(box || attention): the attention should cover the person's box evenly
                kl, valid = box_attention_kl(att, region.detach(), gt_boxes.to(region))
                att_misfit.append(kl[valid])
            region_cpu = region.detach().float().cpu()
            nxt = []
            for i in range(p):
                fi = int(frame_index[i])
                key = (fi, final, tuple(region_cpu[i].tolist()))
                if key not in cache:
                    cache[key] = (region_proposals(props[fi], region_cpu[i]) if final else
                                  cluster_subregions(props[fi], region_cpu[i], self.clusters, self.max_area_fraction))
                subs = cache[key]
                if len(subs) == 1:
                    nxt.append(subs[0])
                    continue
                # scores as logits: subregion_logits at the shrinkage steps, soft IoU / FINAL_TEMPERATURE at the
                # final proposal choice
                sc = (soft_iou(att[i], region_cpu[i], subs) / FINAL_TEMPERATURE if final
                      else self.subregion_logits(att[i], region_cpu[i], subs))
                if gt_boxes is None:
                    nxt.append(subs[int(sc.argmax())])
                    continue
                gt = gt_boxes[i].detach().float().cpu()
                if final:  # the last choice: the tightest fit (cost 1 - IoU)
                    cost = 1 - box_iou(subs, gt[None])[:, 0]
                    pick = int(torch.argmin(cost))
                else:  # shrinkage: keep the person inside (cost = fraction left outside; ties: the smaller)
                    cost = box_outside_fraction(subs, gt)
                    area = (subs[:, 2] - subs[:, 0]) * (subs[:, 3] - subs[:, 1])
                    pick = int(torch.argmin(cost + 1e-6 * area / float(h * w)))
                nxt.append(subs[pick])
                scores_rows.append(sc)
                outside_rows.append(cost)
            region = torch.stack(nxt).to(maps.device, maps.dtype)
            regions.append(region)
            attentions.append(att)
        out = {"regions": torch.stack(regions, 1), "attention": torch.stack(attentions, 1)}
        if gt_boxes is not None:
            m = max((len(r) for r in scores_rows), default=1)
            sc = maps.new_full((len(scores_rows), m), float("-inf"))
            ou = maps.new_zeros((len(scores_rows), m))
            for j, (s, o) in enumerate(zip(scores_rows, outside_rows)):
                sc[j, :len(s)] = s
                ou[j, :len(o)] = o.to(ou.device, ou.dtype)
            out.update(subregion_scores=sc, subregion_outside=ou, attention_misfit=torch.cat(att_misfit))
        return out

    # ------------------------------------------------------------------ forward
    def _queries(self, batched_inputs, targets=None):
        """(q: pooled early map, the head's output, pooled late-layer map) of the query crops."""
        q_maps = self.primitive_memory(self.preprocess_image({"images": batched_inputs["query_images"]}))
        late = self.late_layers(self.crop_maps(q_maps))
        out = self.heads(late, targets) if self.training else self.heads(late)
        return q_maps.mean(dim=(2, 3)), out, late.mean(dim=(2, 3))

    def _frames(self, batched_inputs):
        images = self.preprocess_image(batched_inputs)
        proposals = batched_inputs.get("proposals")
        if proposals is None or len(proposals) != len(images):
            raise ValueError(f"NPSM: a frame batch needs 'proposals', one (K, 4) tensor per frame; got "
                             f"{None if proposals is None else len(proposals)} for {len(images)} frames")
        return self.primitive_memory(images), list(proposals), tuple(images.shape[-2:])

    def forward(self, batched_inputs):
        if not self.training:
            return self.inference(batched_inputs)["features"]
        for key in ("query_images", "gt_boxes", "proposals", "pairs"):
            if not isinstance(batched_inputs, dict) or key not in batched_inputs:
                raise ValueError(f"NPSM: the training batch has no '{key}' (train on a person-search dataset: "
                                 "DATASETS.NAMES ('SyntheticScenes',), ('PRWSearch',) or ('CUHKSYSUSearch',))")
        targets = self.training_targets(batched_inputs)
        gt = batched_inputs["gt_boxes"].to(self.device, torch.float32)
        pairs = torch.as_tensor(batched_inputs["pairs"], dtype=torch.long).reshape(-1, 2).to(self.device)
        maps, proposals, hw = self._frames(batched_inputs)
        q, q_out, q_reid = self._queries(batched_inputs, targets)
        sim = self.similarity_maps(maps, pairs[:, 1], q_reid[pairs[:, 0]]) if self.similarity_input == "reid" else None
        s = self.search(maps, proposals, q[pairs[:, 0]], pairs[:, 1], hw, gt_boxes=gt[pairs[:, 0]], similarity=sim)
        final = self.roi_pool(maps, pairs[:, 1], s["regions"][:, -1], self.reid_pool)
        r_out = self.reid_feature(final, targets[pairs[:, 0]])
        return self.compute_losses(r_out, q_out, s, targets[pairs[:, 0]], targets)

    def compute_losses(self, r_out, q_out, s, targets, query_targets) -> Dict[str, torch.Tensor]:
        """Identity losses on the final region (and, weighted QUERY_ID_WEIGHT, on the query crop, suffix
        ``_query``) + the box-inside loss over every step's sub-regions."""
        storage = event_storage()
        if storage is not None:
            log_accuracy(r_out["pred_class_logits"].detach(), targets)
        box = {n: fn for n, fn in self.loss_fns.items() if "attention_misfit" in fn.inputs}
        ident = {n: fn for n, fn in self.loss_fns.items() if n not in box}
        losses = compute_losses(ident, {"logits": r_out["cls_outputs"], "features": r_out["features"],
                                        "targets": targets})
        if self.query_id_weight > 0:
            losses.update(compute_losses(ident, {"logits": q_out["cls_outputs"], "features": q_out["features"],
                                                 "targets": query_targets}, suffix="_query",
                                         weights={n: self.query_id_weight for n in ident}))
        losses.update(compute_losses(box, {"subregion_scores": s["subregion_scores"],
                                           "subregion_outside": s["subregion_outside"],
                                           "attention_misfit": s["attention_misfit"]}))
        return losses

    def inference(self, batched_inputs) -> Dict[str, object]:
        """Eval outputs (module docstring): a search batch when it has ``query_images``, else a crop batch."""
        if not (isinstance(batched_inputs, dict) and "query_images" in batched_inputs):
            maps = self.primitive_memory(self.preprocess_image(batched_inputs))
            return {"features": self.reid_feature(self.crop_maps(maps))}
        maps, proposals, hw = self._frames(batched_inputs)
        q, q_feat, q_reid = self._queries(batched_inputs)
        pairs = torch.as_tensor(batched_inputs["pairs"], dtype=torch.long, device=self.device).reshape(-1, 2)
        sim = self.similarity_maps(maps, pairs[:, 1], q_reid[pairs[:, 0]]) if self.similarity_input == "reid" else None
        s = self.search(maps, proposals, q[pairs[:, 0]], pairs[:, 1], hw, similarity=sim)
        feats, scores = self.region_scores(maps, pairs[:, 1], s["regions"][:, -1], q_feat[pairs[:, 0]])
        return {"features": feats, "query_features": q_feat, "scores": scores, "boxes": s["regions"][:, -1],
                "trajectory": s["regions"], "attention": s["attention"]}
