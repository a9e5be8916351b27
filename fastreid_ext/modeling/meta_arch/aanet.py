# encoding: utf-8
"""AANet: Attribute Attention Network, as a FastReID meta-architecture.

Reference
---------
Chiat-Pin Tay, Sharmili Roy, Kim-Hui Yap. "AANet: Attribute Attention Network for Person
Re-Identifications". CVPR 2019. No public code exists; this file is an independent implementation
of the paper's description.

Paper element -> implementation
-------------------------------
* Shared ResNet backbone (ResNet-50 / ResNet-152, ImageNet weights, last stride 1 so that a
  384x128 input gives a 24x8 map): FastReID's ``build_backbone(cfg)``; the registered builder
  :func:`~fastreid_ext.modeling.backbones.resnet.build_aanet_resnet_backbone` (in ``modeling/backbones/``)
  is FastReID's ``build_resnet_backbone`` plus
  ``MODEL.BACKBONE.DEPTH: 152x`` (FastReID 1.4.0 stops at 101x).
* GFN, Global Feature Network (GAP -> 1x1 conv -> BN -> ReLU -> linear + softmax identity
  classifier): :class:`GFN`.
* PFN, Part Feature Network (6 horizontal body parts located from the peak activations, each
  pooled and reduced like the GFN, one identity classifier per part): :func:`locate_parts`
  (localisation) and :class:`PFN`.
* AFN, Attribute Feature Network, task (i) attribute classification (1x1 conv Z -> V, the map
  split into top / middle / bottom regions plus the whole map, each attribute classified from the
  region it belongs to): :class:`AFN`, region table :data:`ATTRIBUTE_REGIONS`,
  :func:`attribute_region`, :func:`region_rows`.
* AFN task (ii), Attribute Attention Map (class activation maps of the predicted class of every
  attribute classifier, merged with an elementwise max, adaptively thresholded to remove the
  background): :meth:`AFN.attention_map` (CAMs), :func:`merge_and_threshold` (max + threshold).
* Multi-task loss with homoscedastic uncertainty, ``L = sum_i L_i / (2 sigma_i^2) + log sigma_i``
  (Kendall, Gal, Cipolla, CVPR 2018), with ``s_i = log sigma_i^2`` learned:
  the registered ``UncertaintyLoss`` (:mod:`fastreid_ext.modeling.losses.uncertainty`); the tasks and
  their losses: :func:`aanet_tasks`, :meth:`AANet.task_losses`.
* The whole network, its training losses and its test outputs: :class:`AANet` (registered in
  FastReID's ``META_ARCH_REGISTRY``).

Choices the paper leaves open (made here, all documented)
---------------------------------------------------------
* **PFN part localisation.** The paper: the ROIs are found "by identifying the peak activation
  regions in each feature map" and "clustered into six bins" that form the six parts. Here, per
  image and without gradient (:func:`locate_parts`):

  1. for every channel ``c`` (every "feature map") and row ``h``: its peak activation over the
     width, ``P[c, h] = max_w X[c, h, w]``, divided by the channel's overall peak
     ``max_h P[c, h]``, so every feature map casts the same unit vote at the rows where it peaks;
  2. the row profile ``p(h) = mean_c P[c, h]`` (in [0, 1]: how strongly the feature maps peak at
     row ``h``); rows with ``p(h) >= mean_h p(h)`` (adaptive threshold) are the peak-activation
     rows, and the body's vertical extent is ``[first, last + 1)`` of those rows (gaps inside are
     bridged: a body part is never cut out of the middle);
  3. an extent shorter than ``min(H, num_parts)`` rows is widened symmetrically (and kept inside
     the map) to that size, so every part spans at least one row;
  4. the extent is binned into ``num_parts`` equal-height bins (the "six bins"); part ``k``
     average-pools the map over its bin and the full width, with exact area weights for bins whose
     edges fall inside a row (``w_k(h) = |[h, h+1) n [b_k, b_k+1)| / |[b_k, b_k+1)|``).

  Why: it uses the peak activations of the individual feature maps to locate where the body
  is, then bins that located region into six horizontal parts, which is the paper's description;
  unlike PCB's fixed split, parts follow the body when it does not fill the crop (a body on rows
  6..17 of 24 gives parts of 2 rows each inside 6..17). When the activations give no evidence (a
  flat or all-zero map: every row passes the threshold) it falls back to the fixed split. The
  localisation is not differentiable (argmax-like); gradients reach the backbone through the
  pooled features.
* **Part features and losses.** Each part has its own 1x1 conv -> BN -> ReLU reduction and its own
  identity classifier (PCB-style, the "same processing as the GFN"); the part task loss is the MEAN
  of the six part cross-entropies (so it has the scale of one classifier's loss).
* **AFN.** Reduction = 1x1 conv (no bias) -> BN -> ReLU (ReLU so that the CAMs are built from
  non-negative evidence); the three regions are equal thirds of the map's rows
  (:func:`region_rows`: rows ``[round(iH/3), round((i+1)H/3))``; 0-8, 8-16, 16-24 for a 24-row
  map); "global" attributes use the whole map. Each attribute head (of
  :class:`~fastreid_ext.data.attributes.AttributeSchema`: one per field, or one per colour group)
  is GAP over its region -> linear -> softmax. Region of each head: :data:`ATTRIBUTE_REGIONS`
  (an explicit table of every Market-1501 and DukeMTMC-reID attribute field, see there); a
  colour-group head takes the region of its fields; an unknown name is "global".
* **AAM.** For each head ``a`` with predicted class ``k* = argmax`` (the prediction, in training
  too, so that training and test build the map the same way), the CAM is
  ``M_a = relu(sum_v W_a[k*, v] A_r[v])`` on the head's region rows ``r`` (zero elsewhere), scaled
  to [0, 1] by its per-image maximum. The merged map is ``M = max_a M_a`` (elementwise). The
  adaptive threshold is the mean of ``M`` per image: ``AAM = M * [M >= mean(M)]`` - the
  below-mean locations (background) are set to 0, the foreground keeps its graded values in
  [0, 1] (:func:`merge_and_threshold`).
* **Use of the AAM.** It re-weights the backbone map entering the GFN, residually:
  ``GFN input = X * (1 + AAM)`` (attribute regions weighted up to 2x, background kept at 1; a
  plain ``X * AAM`` would zero most of the map early in training, when the attribute classifiers
  are still random). The PFN works on the plain ``X`` (it does its own localisation). The AAM is
  computed WITHOUT gradient (detached): the attribute classifiers are trained by the attribute
  loss only, the identity loss cannot bend them to its own use through the attention path.
* **Losses / tasks.** ``global_id`` = cross-entropy (FastReID's ``cross_entropy_loss``, label
  smoothing from ``MODEL.LOSSES.CE``) of the GFN classifier; ``part_id`` = mean part cross-entropy;
  ``attr`` = mean over attribute heads of the cross-entropy, ignoring unlabelled targets (-1; a
  head with no labelled sample in the batch is skipped); optionally ``triplet`` = FastReID's
  ``triplet_loss`` on the GFN feature (own task, own sigma) when ``TripletLoss`` is in
  ``MODEL.LOSSES.NAME``. ``CrossEntropyLoss`` must be there (AANet is classification-based).
* **Uncertainty weighting.** ``term_i = 0.5 * exp(-s_i) * L_i + 0.5 * s_i`` (= ``L_i / (2
  sigma_i^2) + log sigma_i``), ``s_i`` initialised to 0 (sigma 1). The returned loss dict holds
  these weighted terms (FastReID's trainer sums them); the log-variances ``s_i``, the sigmas and
  the unweighted ``L_i`` go to the event storage (``aanet/log_var_<task>``,
  ``aanet/sigma_<task>``, ``aanet/raw_<task>``) when one is active. The ``s_i`` live in the heads
  (learning rate of the new layers) and get the ordinary weight decay. With
  ``MODEL.AANET.UNCERTAINTY: False`` the terms are the plain ``L_i`` (plain sum).
* **Test output.** ``features`` = concatenation of the L2-normalised GFN feature and the six
  L2-normalised part features (``(1 + num_parts) * REDUCTION_DIM``, 1792-d by default; each block
  has unit norm, so with cosine distance every block weighs the same); ``attributes`` = per-head
  softmax probabilities (schema order); ``attention`` = the AAM (B, h, w).
* **New layers' initialisation.** 1x1 convs Kaiming-normal (fan_out), BN weight 1 / bias 0,
  classifiers normal(std 0.001) with zero bias (FastReID's convention).
* **Learning rates.** Every new layer (GFN, PFN, AFN, log-variances) lives under ``model.heads``,
  the module FastReID's optimizer builder scales by ``SOLVER.HEADS_LR_FACTOR`` (0.01 backbone x 10
  = 0.1 new layers in ``configs/Base-AANet.yml``).
"""

from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from fastreid.config import configurable
from fastreid.modeling.backbones import build_backbone
from fastreid.modeling.losses import log_accuracy
from fastreid.modeling.meta_arch.build import META_ARCH_REGISTRY

from ...data.attributes import AttributeSchema

from ..common import ReidMetaArch, attribute_schema, event_storage
from ..losses import build_loss, build_losses, check_loss_inputs
from ..losses.uncertainty import UncertaintyLoss

__all__ = [
    "ATTRIBUTE_REGIONS",
    "REGIONS",
    "AANet",
    "AFN",
    "GFN",
    "PFN",
    "attribute_region",
    "aanet_tasks",
    "locate_parts",
    "merge_and_threshold",
    "region_rows",
]

#: AFN regions: three horizontal thirds of the map, plus the whole map.
REGIONS = ("top", "middle", "bottom", "global")

# Attribute field -> AFN region, for every field of the Market-1501 and DukeMTMC-reID attribute
# files (and the synthetic sets, which use the same names), plus the colour-group heads of
# AttributeSchema(group_colours=True). Meaning of the fields (Lin et al., "Improving person
# re-identification by attribute and identity learning"):
#   Market: hat, hair (short/long)          -> head            -> "top"
#           up (sleeve length), up<colour>  -> upper body      -> "middle"
#           backpack (worn on the back)     -> upper body      -> "middle"
#           down (lower-body length), clothes (dress/pants), down<colour> -> lower body -> "bottom"
#           gender, age, bag, handbag       -> whole person / carried anywhere -> "global"
#   Duke:   hat -> "top"; top (upper-body clothing length), backpack, up<colour> -> "middle";
#           boots, shoes (shoe colour), down<colour> -> "bottom"; gender, bag, handbag -> "global".
ATTRIBUTE_REGIONS: Dict[str, str] = {
    # head
    "hat": "top", "hair": "top",
    # upper body
    "up": "middle", "top": "middle", "backpack": "middle", "upcolor": "middle",
    "upblack": "middle", "upblue": "middle", "upbrown": "middle", "upgray": "middle",
    "upgreen": "middle", "uppurple": "middle", "upred": "middle", "upwhite": "middle",
    "upyellow": "middle",
    # lower body
    "down": "bottom", "clothes": "bottom", "boots": "bottom", "shoes": "bottom", "downcolor": "bottom",
    "downblack": "bottom", "downblue": "bottom", "downbrown": "bottom", "downgray": "bottom",
    "downgreen": "bottom", "downpink": "bottom", "downpurple": "bottom", "downred": "bottom",
    "downwhite": "bottom", "downyellow": "bottom",
    # whole person
    "gender": "global", "age": "global", "bag": "global", "handbag": "global",
}


def attribute_region(name: str, fields: Sequence[str] = ()) -> str:
    """AFN region of an attribute head: its name in :data:`ATTRIBUTE_REGIONS`, else the common
    region of its fields (a colour group), else "global"."""
    if name in ATTRIBUTE_REGIONS:
        return ATTRIBUTE_REGIONS[name]
    regions = {ATTRIBUTE_REGIONS.get(f, "global") for f in fields}
    return regions.pop() if len(regions) == 1 else "global"


def region_rows(region: str, height: int) -> Tuple[int, int]:
    """Rows ``[start, end)`` of ``region`` in a map of ``height`` rows (equal thirds)."""
    if region == "global":
        return 0, height
    i = REGIONS.index(region)
    return round(i * height / 3), round((i + 1) * height / 3)


# --------------------------------------------------------------------------- #
# Sub-networks
# --------------------------------------------------------------------------- #
def _reduction(in_channels: int, out_channels: int) -> nn.Sequential:
    """1x1 conv (no bias) -> BN -> ReLU."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class GFN(nn.Module):
    """Global Feature Network: GAP -> 1x1 conv -> BN -> ReLU (feature, (B, dim)) -> identity
    classifier (logits, or ``None`` without classes)."""

    def __init__(self, in_channels: int, dim: int, num_classes: int):
        super().__init__()
        self.reduction = _reduction(in_channels, dim)
        self.classifier = nn.Linear(dim, num_classes) if num_classes > 0 else None

    def forward(self, x):
        feat = self.reduction(F.adaptive_avg_pool2d(x, 1)).flatten(1)
        return feat, (self.classifier(feat) if self.classifier is not None else None)


@torch.no_grad()
def locate_parts(fmap: torch.Tensor, num_parts: int = 6) -> Tuple[torch.Tensor, torch.Tensor]:
    """PFN localisation (see the module docstring): the body's vertical extent from the peak
    activations of the feature maps, binned into ``num_parts`` equal bins.

    ``fmap``: (B, C, H, W). Returns ``(bounds, weights)``: ``bounds`` (B, num_parts + 1) bin edges
    in row units (0 = top of the map, H = bottom), ``weights`` (B, num_parts, H) row weights of
    each part (non-negative, each part's weights sum to 1).
    """
    b, _, h, _ = fmap.shape
    x = fmap.detach().float().clamp(min=0)
    peak = x.amax(dim=3)  # (B, C, H): peak activation of each feature map in each row
    peak = peak / peak.amax(dim=2, keepdim=True).clamp_min(1e-12)
    profile = peak.mean(dim=1)  # (B, H)
    body = profile >= profile.mean(dim=1, keepdim=True)
    rows = torch.arange(h, device=fmap.device)
    lo = torch.where(body, rows, h).amin(dim=1).float()
    hi = torch.where(body, rows, -1).amax(dim=1).float() + 1
    # at least min(H, num_parts) rows, widened symmetrically and kept inside [0, H]
    grow = (min(h, num_parts) - (hi - lo)).clamp(min=0)
    lo, hi = lo - grow / 2, hi + grow / 2
    shift = (-lo).clamp(min=0) - (hi - h).clamp(min=0)
    lo, hi = lo + shift, hi + shift
    steps = torch.arange(num_parts + 1, device=fmap.device, dtype=torch.float32) / num_parts
    bounds = lo[:, None] + (hi - lo)[:, None] * steps[None]  # (B, P + 1)
    start, end = bounds[:, :-1, None], bounds[:, 1:, None]  # (B, P, 1)
    r = rows.float()[None, None]  # (1, 1, H)
    overlap = (torch.minimum(r + 1, end) - torch.maximum(r, start)).clamp(min=0)
    weights = overlap / overlap.sum(dim=2, keepdim=True).clamp_min(1e-12)
    return bounds, weights


class PFN(nn.Module):
    """Part Feature Network: :func:`locate_parts`, average pooling of each part, then per part a
    1x1 conv -> BN -> ReLU reduction and an identity classifier.

    ``forward(x)`` -> ``(feats, logits, bounds)``: lists of ``num_parts`` (B, dim) features and
    (B, num_classes) logits (``None`` without classes), and the part bin edges (B, num_parts + 1).
    """

    def __init__(self, in_channels: int, dim: int, num_classes: int, num_parts: int = 6):
        super().__init__()
        if num_parts < 1:
            raise ValueError(f"PFN: num_parts must be >= 1, got {num_parts}")
        self.num_parts = int(num_parts)
        self.reductions = nn.ModuleList([_reduction(in_channels, dim) for _ in range(num_parts)])
        self.classifiers = (nn.ModuleList([nn.Linear(dim, num_classes) for _ in range(num_parts)])
                            if num_classes > 0 else None)

    def forward(self, x):
        bounds, weights = locate_parts(x, self.num_parts)
        pooled = torch.einsum("bph,bch->bcp", weights.to(x.dtype), x.mean(dim=3))  # (B, C, P)
        feats, logits = [], []
        for k in range(self.num_parts):
            f = self.reductions[k](pooled[:, :, k, None, None]).flatten(1)
            feats.append(f)
            logits.append(self.classifiers[k](f) if self.classifiers is not None else None)
        return feats, logits, bounds


def merge_and_threshold(cams: torch.Tensor) -> torch.Tensor:
    """AAM from per-attribute CAMs (B, A, H, W), each already in [0, 1]: elementwise max over the
    attributes, then the adaptive threshold ``mean`` of the merged map per image - values below it
    (background) become 0, the rest is kept. Returns (B, H, W) in [0, 1]."""
    if cams.size(1) == 0:
        return cams.new_zeros(cams.size(0), cams.size(2), cams.size(3))
    merged = cams.amax(dim=1)
    thr = merged.mean(dim=(1, 2), keepdim=True)
    return merged * (merged >= thr).to(merged.dtype)


class AFN(nn.Module):
    """Attribute Feature Network: a 1x1 conv -> BN -> ReLU reduction to ``dim`` channels, one
    classifier per attribute head on the GAP of its region (:func:`attribute_region`), and the
    Attribute Attention Map (:meth:`attention_map`).

    ``forward(x)`` -> ``(logits, aam)``: a list of (B, K_h) logits (heads' order) and the AAM
    (B, H, W) in [0, 1], computed without gradient.
    """

    def __init__(self, in_channels: int, dim: int, heads: Sequence[Tuple[str, int, Sequence[str]]]):
        super().__init__()
        self.reduction = _reduction(in_channels, dim)
        self.head_names = [h[0] for h in heads]
        self.regions = [attribute_region(name, fields) for name, _, fields in heads]
        self.classifiers = nn.ModuleList([nn.Linear(dim, int(k)) for _, k, _ in heads])

    def region_maps(self, a: torch.Tensor) -> List[Tuple[int, int]]:
        h = int(a.size(2))  # a Python int also under torch.jit.trace (the rows depend on the input size only)
        if h < 3:
            raise ValueError(f"AFN needs a feature map of at least 3 rows (top/middle/bottom), got {h}")
        return [region_rows(r, h) for r in self.regions]

    def forward(self, x):
        a = self.reduction(x)
        rows = self.region_maps(a)
        logits = [clf(a[:, :, r0:r1].mean(dim=(2, 3))) for clf, (r0, r1) in zip(self.classifiers, rows)]
        aam = self.attention_map(a, logits, rows)
        return logits, aam

    @torch.no_grad()
    def attention_map(self, a, logits, rows=None) -> torch.Tensor:
        """CAM of each head's predicted class on its region rows (relu, scaled to [0, 1] per
        image, zero outside the region), merged by :func:`merge_and_threshold`. Computed in float32
        and returned in ``a``'s dtype: in float16 (``--half`` export, AMP) the 1e-12 floor of the
        scaling rounds to 0 and an all-zero CAM became 0/0 = NaN in the global feature (found by the
        export parity check)."""
        dtype = a.dtype
        a = a.detach().float()
        rows = rows if rows is not None else self.region_maps(a)
        b, _, h, w = a.shape
        cams = a.new_zeros(b, len(self.classifiers), h, w)
        for i, (clf, lg, (r0, r1)) in enumerate(zip(self.classifiers, logits, rows)):
            weight = clf.weight[lg.detach().argmax(dim=1)].float()  # (B, V): the predicted class's weights
            cam = torch.einsum("bv,bvhw->bhw", weight, a[:, :, r0:r1]).clamp(min=0)
            cam = cam / cam.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
            cams[:, i, r0:r1] = cam
        return merge_and_threshold(cams).to(dtype)


# --------------------------------------------------------------------------- #
# Meta-architecture
# --------------------------------------------------------------------------- #
def _init_new_layers(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.001)
            nn.init.zeros_(m.bias)


def aanet_tasks(losses) -> list:
    """AANet's task names for the configured losses, in a fixed order (the order of the learned
    log-variances in checkpoints): identity-classifier losses on the GFN (``global_<k>``) and on the
    PFN parts (``part_<k>``), the attribute loss (``attr``), then feature losses on the GFN feature
    (``<k>``); ``k`` is the loss's key, ``id`` for CrossEntropyLoss."""
    ident = [name for name, l in losses.items() if "logits" in l.inputs]
    attr = [name for name, l in losses.items() if "attr_logits" in l.inputs]
    other = [name for name in losses if name not in ident and name not in attr]
    return ([f"global_{_task_key(losses, n)}" for n in ident] + [f"part_{_task_key(losses, n)}" for n in ident]
            + [_task_key(losses, n) for n in attr] + [_task_key(losses, n) for n in other])


def _task_key(losses, name: str) -> str:
    return "id" if name == "CrossEntropyLoss" else losses[name].key


@META_ARCH_REGISTRY.register()
class AANet(ReidMetaArch):
    """AANet: shared backbone + GFN + PFN + AFN (with the AAM) + uncertainty-weighted losses.

    ``forward(batched_inputs)``: a dict with ``images`` (B, 3, H, W) float 0-255 (a bare tensor is
    also accepted in eval) and, in training, ``targets`` (B,) and ``attributes`` (B, F) per-field
    class indices (-1 = unlabelled; F = the schema's fields). The input is not modified.

    * training: dict of the (weighted) task losses ``loss_global_id``, ``loss_part_id``,
      ``loss_attr`` (+ ``loss_triplet``); see the module docstring and :func:`aanet_tasks`;
    * eval: the (B, (1 + P) * dim) retrieval feature (FastReID's contract); :meth:`inference` also
      gives ``"attributes"`` ([(B, K_h) probabilities per head]) and ``"attention"`` ((B, h, w) AAM).

    All new layers are under ``self.heads`` (``gfn``, ``pfn``, ``afn``, ``uncertainty``), so
    ``SOLVER.HEADS_LR_FACTOR`` sets their learning rate relative to the backbone's.
    """

    #: tensors AANet provides to the losses
    LOSS_INPUTS = ("logits", "features", "targets", "attr_logits", "attr_targets")

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        in_channels: int,
        num_classes: int,
        schema: AttributeSchema,
        pixel_mean,
        pixel_std,
        losses: nn.ModuleDict,
        uncertainty: nn.Module,
        num_parts: int = 6,
        reduction_dim: int = 256,
    ):
        super().__init__(pixel_mean, pixel_std)
        num_classes = int(num_classes)
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if len(schema) == 0:
            raise ValueError("AANet needs at least one attribute head (empty attribute schema)")
        check_loss_inputs("AANet", losses, self.LOSS_INPUTS)
        if "CrossEntropyLoss" not in losses:
            raise ValueError("AANet: MODEL.LOSSES.NAME must contain 'CrossEntropyLoss' (identity and "
                             "attribute classification are its tasks)")
        if list(uncertainty.tasks) != aanet_tasks(losses):
            raise ValueError(f"AANet: the uncertainty weighting's tasks {uncertainty.tasks} differ from the "
                             f"losses' tasks {aanet_tasks(losses)}")

        self.backbone = backbone
        self.in_channels = int(in_channels)
        self.num_classes = num_classes
        self.schema = schema
        self.num_parts = int(num_parts)
        self.reduction_dim = int(reduction_dim)
        heads_spec = [(h.name, h.num_classes, h.fields) for h in schema.heads]
        self.heads = nn.ModuleDict({
            "gfn": GFN(self.in_channels, self.reduction_dim, num_classes),
            "pfn": PFN(self.in_channels, self.reduction_dim, num_classes, self.num_parts),
            "afn": AFN(self.in_channels, self.reduction_dim, heads_spec),
        })
        _init_new_layers(self.heads)
        self.heads["uncertainty"] = uncertainty
        self.loss_fns = losses

    @classmethod
    def from_config(cls, cfg):
        a = cfg.MODEL.AANET
        names = list(cfg.MODEL.LOSSES.NAME)
        if "AttributeCrossEntropyLoss" not in names:
            names.append("AttributeCrossEntropyLoss")  # AANet's attribute task
        losses = build_losses(cfg, names, extra={"AttributeCrossEntropyLoss": {"average": "labelled"}})
        return {
            "backbone": build_backbone(cfg),
            "in_channels": cfg.MODEL.BACKBONE.FEAT_DIM,
            "num_classes": cfg.MODEL.HEADS.NUM_CLASSES,
            "schema": attribute_schema(cfg),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "num_parts": a.NUM_PARTS,
            "reduction_dim": a.REDUCTION_DIM,
            "losses": losses,
            "uncertainty": build_loss(cfg, "UncertaintyLoss", tasks=aanet_tasks(losses), enabled=a.UNCERTAINTY),
        }

    # sub-networks, by their paper names
    @property
    def gfn(self) -> GFN:
        return self.heads["gfn"]

    @property
    def pfn(self) -> PFN:
        return self.heads["pfn"]

    @property
    def afn(self) -> AFN:
        return self.heads["afn"]

    @property
    def uncertainty(self) -> UncertaintyLoss:
        return self.heads["uncertainty"]

    @property
    def feat_dim(self) -> int:
        """Dimension of the test feature."""
        return (1 + self.num_parts) * self.reduction_dim

    def extract(self, images: torch.Tensor) -> Dict[str, object]:
        """All intermediate outputs for normalised ``images``: backbone map ``fmap``, ``aam``,
        ``attr_logits``, ``global_feat`` / ``global_logits``, ``part_feats`` / ``part_logits``,
        ``part_bounds``."""
        fmap = self.backbone(images)
        if fmap.dim() != 4 or fmap.size(1) != self.in_channels:
            raise ValueError(f"AANet: the backbone gives {tuple(fmap.shape)}, expected (B, {self.in_channels}, "
                             "h, w); set MODEL.BACKBONE.FEAT_DIM to the backbone's output channels")
        attr_logits, aam = self.afn(fmap)
        part_feats, part_logits, bounds = self.pfn(fmap)
        global_feat, global_logits = self.gfn(fmap * (1 + aam.unsqueeze(1)))
        return {"fmap": fmap, "aam": aam, "attr_logits": attr_logits, "global_feat": global_feat,
                "global_logits": global_logits, "part_feats": part_feats, "part_logits": part_logits,
                "part_bounds": bounds}

    def inference(self, batched_inputs) -> Dict[str, object]:
        """Eval outputs: ``{"features": (B, (1 + P) * dim) retrieval feature, "attributes": [(B, K_h)
        probabilities per head], "attention": (B, h, w) AAM}``."""
        out = self.extract(self.preprocess_image(batched_inputs))
        feats = [out["global_feat"]] + out["part_feats"]
        return {
            "features": torch.cat([F.normalize(f, p=2, dim=1) for f in feats], dim=1),
            "attributes": [lg.softmax(dim=1) for lg in out["attr_logits"]],
            "attention": out["aam"],
        }

    def forward(self, batched_inputs):
        if not self.training:
            return self.inference(batched_inputs)["features"]
        if not isinstance(batched_inputs, dict) or "targets" not in batched_inputs:
            raise ValueError("AANet: person ID annotations ('targets') are missing in training")
        if "attributes" not in batched_inputs:
            raise ValueError("AANet: 'attributes' are missing from the training batch; add \"attributes\" "
                             "to INPUT.EXTRA_FIELDS and train on an attribute dataset")
        if self.num_classes == 0:
            raise ValueError("AANet: cannot train with num_classes = 0 (cfg.MODEL.HEADS.NUM_CLASSES)")
        targets = self.training_targets(batched_inputs)
        attr_targets = self.schema.targets(batched_inputs["attributes"]).to(self.device)
        out = self.extract(self.preprocess_image(batched_inputs))
        return self.compute_losses(out, targets, attr_targets)

    def task_losses(self, out, targets, attr_targets) -> Dict[str, torch.Tensor]:
        """Unweighted task losses ``L_i`` (see the module docstring and :func:`aanet_tasks`)."""
        losses = {}
        for name, loss in self.loss_fns.items():
            k = _task_key(self.loss_fns, name)
            if "logits" in loss.inputs:
                losses[f"global_{k}"] = loss(logits=out["global_logits"], targets=targets)
                losses[f"part_{k}"] = torch.stack([loss(logits=lg, targets=targets)
                                                   for lg in out["part_logits"]]).mean()
            elif "attr_logits" in loss.inputs:
                losses[k] = loss(attr_logits=out["attr_logits"], attr_targets=attr_targets)
            else:
                losses[k] = loss(features=out["global_feat"], targets=targets)
        return {t: losses[t] for t in self.uncertainty.tasks}

    def compute_losses(self, out, targets, attr_targets) -> Dict[str, torch.Tensor]:
        """Uncertainty-weighted task losses ``loss_<task>``; the raw ones go to the event storage."""
        raw = self.task_losses(out, targets, attr_targets)
        weighted = self.uncertainty(raw)
        if event_storage() is not None:
            log_accuracy(out["global_logits"].detach(), targets)
            self.uncertainty.log_to_storage(raw)
        return {f"loss_{task}": v for task, v in weighted.items()}
