# encoding: utf-8
"""APR: the Attribute-Person Recognition network, as FastReID components.

Reference
---------
Yutian Lin, Liang Zheng, Zhedong Zheng, Yu Wu, Zhilan Hu, Chenggang Yan, Yi Yang. "Improving
Person Re-identification by Attribute and Identity Learning". Pattern Recognition 95 (2019),
151-161 (arXiv:1703.07220). No code from the authors is used; this is an implementation from the
paper on top of FastReID's backbones, heads registry, losses and trainer.

Paper element -> implementation
-------------------------------
* Architecture overview (Sec. 3.3, Fig. 2): CNN backbone -> global image feature phi(theta; x) ->
  M attribute classifiers f_{A_j} and one identity classifier that takes the global feature
  concatenated with the re-weighted attribute predictions: :class:`APR` (backbone from FastReID's
  ``build_backbone``, any registered backbone; ResNet-50 in the paper) + :class:`APRHead`
  (registered in ``REID_HEADS_REGISTRY``).
* Attribute classifiers f_{A_j}(w_{A_j}; phi(theta; x)), one softmax per attribute (Market ``age``
  4-way, the rest 2-way; or 8-/9-way colour heads with ``MODEL.ATTRIBUTES.GROUP_COLOURS``):
  ``APRHead.attr_classifiers`` (one ``nn.Linear`` per head of the
  :class:`~fastreid_ext.data.attributes.AttributeSchema`, in schema order).
* Attribute Re-weighting Module, Eq. (3) ``c = sigmoid(W a'^T + b)`` with W (m x m), b (m):
  :meth:`ARM.confidence` (``W = ARM.fc.weight``, ``b = ARM.fc.bias``); Eq. (4) ``a = c . a'``
  (elementwise): :meth:`ARM.forward`. a' is built by :func:`attribute_scores`.
* Identity objective on [phi(theta; x), a] (the identity classifier sees the global feature
  concatenated with a): ``APRHead.weight`` / ``APRHead.cls_layer``; loss ``loss_id``.
* Attribute objective, the ARN objective of Eq. (2) averaged over the M attributes:
  :func:`attribute_loss`; loss ``loss_attr``.
* Overall objective ``L = lambda * L_ID + (1/M) sum_j L_att_j`` (lambda = 8 in the paper):
  :meth:`APR.losses` returns ``loss_id = lambda * L_ID`` and ``loss_attr = (1/M) sum_j L_att_j``;
  FastReID's trainer sums the dict.
* Attribute acceleration (Sec. 3.4, filtering the gallery by confident attribute predictions at
  test time) is a retrieval-time procedure on the eval outputs ("attributes"); it is not part of
  this file.

Choices the paper leaves open (made here, all documented)
---------------------------------------------------------
* ARM input a' (``MODEL.APR.ARM_INPUT``). The paper concatenates "the prediction score of the j-th
  attribute" for j = 1..m. Default ``"positive"``: a 2-way head contributes the softmax probability
  of its second class (value 2 in the files = "yes"; for ``gender`` it is "female") -- the
  prediction score of a binary attribute; a head with K > 2 classes (age, grouped colours)
  contributes all K softmax probabilities. Market (27 fields): m = 26 + 4 = 30; Duke (23 binary
  fields): m = 23. ``"all"``: every class probability of every head (Market: m = 56).
  a' is not detached: the identity loss also trains the attribute classifiers through the ARM.
* ``MODEL.APR.ARM False`` replaces the ARM by the identity (a = a'): the paper's "w/o ARM" ablation.
* ARM initialisation: PyTorch's ``nn.Linear`` default (uniform +-1/sqrt(m) for W and b).
* Global feature g: FastReID's pooling layer (``MODEL.HEADS.POOL_LAYER``, GAP = the paper's pool5)
  on the backbone map, optionally a 1x1 reduction (``MODEL.HEADS.EMBEDDING_DIM``); then FastReID's
  BN neck (``MODEL.HEADS.WITH_BNNECK``, bias frozen, as ``EmbeddingHead``; off in
  ``configs/Base-APR.yml``, the paper's setting, where the neck is the identity).
  The attribute classifiers read g itself (pool5, as in the paper), the identity classifier reads
  [neck(g), a]. Reason: the frozen-bias BN neck makes every feature zero-mean over the batch, so an
  attribute classifier on it could learn its class prior (most Market attributes are unbalanced)
  only through its bias; on g it learns it at once (checked on the synthetic set).
* Identity classifier: bias-free weight (num_classes x (D + m)), N(0, 0.01) init, FastReID's
  ``MODEL.HEADS.CLS_LAYER`` (Linear in the paper; Arc/Cos/CircleSoftmax work on the normalised
  concatenation); identity loss = FastReID's ``cross_entropy_loss`` with its label-smoothing
  options (``MODEL.LOSSES.CE``), times ``CE.SCALE``.
* Attribute classifiers: ``nn.Linear`` with bias, N(0, 0.001) weights, zero bias. Attribute loss:
  cross-entropy per head over the labelled images only (target -1 = unlabelled is ignored), each
  head averaged over its labelled images (0 if it has none in the batch), then averaged over ALL M
  heads (1/M).
* Optional ``TripletLoss`` (not in the paper) on the global feature chosen by
  ``MODEL.HEADS.NECK_FEAT`` (FastReID's convention: before = pooled, after = BN-neck output),
  times ``TRI.SCALE``; it is not multiplied by lambda.
* Retrieval feature (``MODEL.APR.TEST_FEATURE``): ``"global"`` (default) = the CNN embedding
  phi(theta; x), the paper's test protocol (images ranked by the Euclidean distance of their
  embeddings; FastReID's convention: the BN-neck output when the neck is on, as ``EmbeddingHead``);
  ``"global_attr"`` = [global, a], the identity classifier's input.
* Attribute predictions returned at eval are the attribute classifiers' softmax outputs (what the
  attribute loss trains), not the ARM-re-weighted scores.
* Logging (when a FastReID ``EventStorage`` is active): identity ``cls_accuracy`` (FastReID's
  ``log_accuracy``), ``attr_acc/<head>`` per head over its labelled images and their mean
  ``attr_accuracy``.
"""

import logging
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fastreid.config import configurable
from fastreid.layers import any_softmax, get_norm, pooling
from fastreid.layers.weight_init import weights_init_kaiming
from fastreid.modeling.backbones import build_backbone
from fastreid.modeling.heads.build import REID_HEADS_REGISTRY
from fastreid.modeling.losses import cross_entropy_loss, log_accuracy, triplet_loss
from fastreid.modeling.meta_arch.build import META_ARCH_REGISTRY

from ...data.attributes import IGNORE, AttributeSchema
from ..common import ReidMetaArch, checked_loss_kwargs, loss_kwargs_from_cfg

logger = logging.getLogger(__name__)

__all__ = [
    "ARM",
    "APRHead",
    "APR",
    "attribute_scores",
    "arm_input_dim",
    "attribute_loss",
    "attribute_accuracy",
    "schema_from_config",
    "SUPPORTED_LOSSES",
    "ARM_INPUTS",
    "TEST_FEATURES",
]

#: Loss names accepted in ``MODEL.LOSSES.NAME``.
SUPPORTED_LOSSES = ("CrossEntropyLoss", "TripletLoss")
#: Values of ``MODEL.APR.ARM_INPUT``.
ARM_INPUTS = ("positive", "all")
#: Values of ``MODEL.APR.TEST_FEATURE``.
TEST_FEATURES = ("global", "global_attr")


# --------------------------------------------------------------------------- #
# Attribute Re-weighting Module
# --------------------------------------------------------------------------- #
def arm_input_dim(num_classes: Sequence[int], arm_input: str = "positive") -> int:
    """m, the length of a' for heads with ``num_classes`` classes (see :func:`attribute_scores`)."""
    if arm_input not in ARM_INPUTS:
        raise ValueError(f"ARM input '{arm_input}' unknown; use one of {list(ARM_INPUTS)} (MODEL.APR.ARM_INPUT)")
    if arm_input == "all":
        return int(sum(num_classes))
    return int(sum(1 if k == 2 else k for k in num_classes))


def attribute_scores(probs: Sequence[torch.Tensor], arm_input: str = "positive") -> torch.Tensor:
    """a' (B, m): the concatenated attribute prediction scores.

    ``probs``: per-head softmax probabilities (B, K_j). ``"positive"``: a 2-way head gives its
    second-class probability (B, 1), a K>2-way head all K; ``"all"``: every probability.
    """
    if arm_input not in ARM_INPUTS:
        raise ValueError(f"ARM input '{arm_input}' unknown; use one of {list(ARM_INPUTS)} (MODEL.APR.ARM_INPUT)")
    parts = [p[:, 1:2] if (arm_input == "positive" and p.size(1) == 2) else p for p in probs]
    return torch.cat(parts, dim=1)


class ARM(nn.Module):
    """Attribute Re-weighting Module, Eqs. (3)-(4): ``c = sigmoid(W a'^T + b)``, ``a = c * a'``.

    ``fc.weight`` is W (m x m), ``fc.bias`` is b (m). ``forward(a')`` takes a' (B, m) and returns
    a (B, m); :meth:`confidence` returns c (B, m).
    """

    def __init__(self, dim: int):
        super().__init__()
        if int(dim) <= 0:
            raise ValueError(f"ARM: the attribute score dimension m must be positive, got {dim}")
        self.dim = int(dim)
        self.fc = nn.Linear(self.dim, self.dim)  # PyTorch default init (documented choice)

    def confidence(self, scores: torch.Tensor) -> torch.Tensor:
        """Eq. (3): c = sigmoid(W a'^T + b), row-wise for a batch a' (B, m)."""
        if scores.dim() != 2 or scores.size(1) != self.dim:
            raise ValueError(f"ARM expects scores of shape (B, {self.dim}), got {tuple(scores.shape)}")
        return torch.sigmoid(self.fc(scores))

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        """Eq. (4): a = c * a' (elementwise)."""
        return self.confidence(scores) * scores


# --------------------------------------------------------------------------- #
# Losses and metrics on attribute heads
# --------------------------------------------------------------------------- #
def attribute_loss(logits: Sequence[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """(1/M) sum_j L_att_j: cross-entropy of head j over its labelled images (target != -1),
    0 for a head with no labelled image; averaged over all M heads. ``targets`` (B, M)."""
    if targets.dim() != 2 or targets.size(1) != len(logits):
        raise ValueError(f"attribute targets of shape {tuple(targets.shape)} do not match {len(logits)} heads")
    total = logits[0].new_zeros(())
    for j, lg in enumerate(logits):
        t = targets[:, j]
        n = (t != IGNORE).sum().clamp_min(1)
        head = F.cross_entropy(lg, t, ignore_index=IGNORE, reduction="sum")
        total = total + head / n
    return total / len(logits)


def attribute_accuracy(logits: Sequence[torch.Tensor], targets: torch.Tensor) -> List[Optional[float]]:
    """Per-head accuracy over labelled images (None for a head with none)."""
    out = []
    for j, lg in enumerate(logits):
        t = targets[:, j]
        keep = t != IGNORE
        out.append(float((lg.argmax(1)[keep] == t[keep]).float().mean()) if keep.any() else None)
    return out


def _event_storage():
    try:
        from fastreid.utils.events import get_event_storage

        return get_event_storage()
    except (AssertionError, ImportError):
        return None


# --------------------------------------------------------------------------- #
# Head
# --------------------------------------------------------------------------- #
def schema_from_config(cfg) -> AttributeSchema:
    """The attribute heads of a config: fields from ``attribute_fields(cfg)`` (MODEL.ATTRIBUTES.FIELDS
    or the training set's attribute file), colour grouping from MODEL.ATTRIBUTES.GROUP_COLOURS."""
    from ...data.build import attribute_fields

    return AttributeSchema(attribute_fields(cfg), cfg.MODEL.ATTRIBUTES.GROUP_COLOURS)


@REID_HEADS_REGISTRY.register()
class APRHead(nn.Module):
    """APR head: pooling (+ optional 1x1 reduction) -> global feature g (+ optional BN neck);
    M attribute classifiers on g; ARM; identity classifier on [neck(g), a].

    ``forward(features, targets=None)``, ``features`` the backbone map (B, C, H, W):

    * eval: ``{"features": (B, D) retrieval feature, "attributes": [(B, K_j) softmax per head]}``;
    * training: FastReID's head outputs (``cls_outputs``, ``pred_class_logits``, ``features``) plus
      ``attr_logits`` (list of (B, K_j)), ``attr_scores`` (a', (B, m)) and ``attr_reweighted``
      (a, (B, m)).
    """

    @configurable
    def __init__(
        self,
        *,
        feat_dim: int,
        num_classes: int,
        attr_num_classes: Sequence[int],
        attr_names: Optional[Sequence[str]] = None,
        embedding_dim: int = 0,
        pool_type: str = "GlobalAvgPool",
        with_bnneck: bool = True,
        norm_type: str = "BN",
        neck_feat: str = "before",
        cls_type: str = "Linear",
        scale: float = 1.0,
        margin: float = 0.0,
        use_arm: bool = True,
        arm_input: str = "positive",
        test_feature: str = "global",
    ):
        super().__init__()
        attr_num_classes = [int(k) for k in attr_num_classes]
        if not attr_num_classes or min(attr_num_classes) < 2:
            raise ValueError(f"APRHead needs at least one attribute head with >= 2 classes, got {attr_num_classes}")
        if attr_names is not None and len(attr_names) != len(attr_num_classes):
            raise ValueError(f"{len(attr_names)} attribute names for {len(attr_num_classes)} heads")
        if test_feature not in TEST_FEATURES:
            raise ValueError(f"MODEL.APR.TEST_FEATURE '{test_feature}' unknown; use one of {list(TEST_FEATURES)}")
        if neck_feat not in ("before", "after"):
            raise ValueError(f"MODEL.HEADS.NECK_FEAT '{neck_feat}' unknown; use 'before' or 'after'")
        if not hasattr(pooling, pool_type):
            raise ValueError(f"MODEL.HEADS.POOL_LAYER '{pool_type}' unknown; see fastreid.layers.pooling")
        if not hasattr(any_softmax, cls_type):
            raise ValueError(f"MODEL.HEADS.CLS_LAYER '{cls_type}' unknown; use one of {any_softmax.__all__}")
        num_classes = int(num_classes)
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")

        self.attr_num_classes = attr_num_classes
        self.attr_names = (list(attr_names) if attr_names is not None
                           else [f"attr{j}" for j in range(len(attr_num_classes))])
        self.arm_input = arm_input
        self.arm_dim = arm_input_dim(attr_num_classes, arm_input)
        self.test_feature = test_feature
        self.neck_feat = neck_feat
        self.num_classes = num_classes

        # global feature g: pooling -> (1x1 reduction); BN neck (bias frozen), as FastReID's EmbeddingHead
        self.pool_layer = getattr(pooling, pool_type)()
        self.reduction = None
        if embedding_dim > 0:
            self.reduction = nn.Conv2d(feat_dim, embedding_dim, 1, 1, bias=False)
            feat_dim = embedding_dim
        neck = [get_norm(norm_type, feat_dim, bias_freeze=True)] if with_bnneck else []
        self.bottleneck = nn.Sequential(*neck)
        self.feat_dim = int(feat_dim)

        # M attribute classifiers f_{A_j}
        self.attr_classifiers = nn.ModuleList(nn.Linear(self.feat_dim, k) for k in attr_num_classes)
        # Attribute Re-weighting Module (Eqs. 3-4); None = plain concatenation a = a'
        self.arm = ARM(self.arm_dim) if use_arm else None

        # identity classifier on [global feature, a]
        if num_classes > 0:
            self.weight = nn.Parameter(torch.empty(num_classes, self.feat_dim + self.arm_dim))
            self.cls_layer = getattr(any_softmax, cls_type)(num_classes, scale, margin)
        else:  # inference-only head
            self.register_parameter("weight", None)
            self.cls_layer = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.bottleneck.apply(weights_init_kaiming)
        if self.reduction is not None:
            self.reduction.apply(weights_init_kaiming)
        for clf in self.attr_classifiers:
            nn.init.normal_(clf.weight, std=0.001)
            nn.init.zeros_(clf.bias)
        if self.arm is not None:
            self.arm.fc.reset_parameters()
        if self.weight is not None:
            nn.init.normal_(self.weight, std=0.01)

    @classmethod
    def from_config(cls, cfg, schema: Optional[AttributeSchema] = None):
        if cfg.MODEL.META_ARCHITECTURE == "Baseline":
            raise ValueError(
                "APRHead needs the attribute labels and attribute losses that FastReID's Baseline does not "
                "compute: set MODEL.META_ARCHITECTURE: APR (with INPUT.EXTRA_FIELDS ['attributes'])")
        if "APR" not in cfg.MODEL:
            raise KeyError("cfg.MODEL.APR is missing: build the config with fastreid_ext.config.get_ext_cfg() "
                           "or add_ext_config(cfg)")
        schema = schema if schema is not None else schema_from_config(cfg)
        heads, apr = cfg.MODEL.HEADS, cfg.MODEL.APR
        return {
            "feat_dim": cfg.MODEL.BACKBONE.FEAT_DIM,
            "num_classes": heads.NUM_CLASSES,
            "attr_num_classes": schema.num_classes,
            "attr_names": schema.names,
            "embedding_dim": heads.EMBEDDING_DIM,
            "pool_type": heads.POOL_LAYER,
            "with_bnneck": heads.WITH_BNNECK,
            "norm_type": heads.NORM,
            "neck_feat": heads.NECK_FEAT,
            "cls_type": heads.CLS_LAYER,
            "scale": heads.SCALE,
            "margin": heads.MARGIN,
            "use_arm": apr.ARM,
            "arm_input": apr.ARM_INPUT,
            "test_feature": apr.TEST_FEATURE,
        }

    def forward(self, features: torch.Tensor, targets: Optional[torch.Tensor] = None) -> Dict[str, object]:
        if features.dim() != 4:
            raise ValueError(f"APRHead expects a backbone map (B, C, H, W), got {tuple(features.shape)}")
        pool_feat = self.pool_layer(features)
        if self.reduction is not None:
            pool_feat = self.reduction(pool_feat)
        neck_feat = self.bottleneck(pool_feat)[..., 0, 0]
        pool_feat = pool_feat[..., 0, 0]

        attr_logits = [clf(pool_feat) for clf in self.attr_classifiers]
        probs = [F.softmax(lg, dim=1) for lg in attr_logits]
        scores = attribute_scores(probs, self.arm_input)  # a'
        reweighted = self.arm(scores) if self.arm is not None else scores  # a

        if not self.training:
            feat = neck_feat if self.test_feature == "global" else torch.cat([neck_feat, reweighted], dim=1)
            return {"features": feat, "attributes": probs}

        if self.weight is None:
            raise ValueError("APRHead: cannot train with num_classes = 0 (cfg.MODEL.HEADS.NUM_CLASSES)")
        x = torch.cat([neck_feat, reweighted], dim=1)
        if type(self.cls_layer) is any_softmax.Linear:
            logits = F.linear(x, self.weight)
        else:
            logits = F.linear(F.normalize(x), F.normalize(self.weight))
        # cls_layer edits its input in place (FastReID): give it a copy
        cls_outputs = self.cls_layer(logits.clone(), targets)
        return {
            "cls_outputs": cls_outputs,
            "pred_class_logits": logits.mul(self.cls_layer.s),
            "features": pool_feat if self.neck_feat == "before" else neck_feat,
            "attr_logits": attr_logits,
            "attr_scores": scores,
            "attr_reweighted": reweighted,
        }


# --------------------------------------------------------------------------- #
# Meta-architecture
# --------------------------------------------------------------------------- #
@META_ARCH_REGISTRY.register()
class APR(ReidMetaArch):
    """APR re-id model: FastReID backbone + :class:`APRHead` + the APR objective.

    ``forward(batched_inputs)``: a dict with ``images`` (B,3,H,W) float 0-255 (a bare tensor is
    accepted in eval); in training also ``targets`` (B,) and ``attributes`` (B, F) per-field class
    indices (-1 = unlabelled, see :class:`AttributeSchema`). The input is not modified.

    * training: ``{"loss_id": lambda * CE.SCALE * L_ID, "loss_attr": (1/M) sum_j L_att_j,
      "loss_triplet": ...}`` (``loss_id`` with 'CrossEntropyLoss', ``loss_triplet`` with
      'TripletLoss' in the loss names; ``loss_attr`` always);
    * eval: ``{"features": (B, D), "attributes": [(B, K_j) softmax per head, schema order]}``.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        heads: APRHead,
        schema: AttributeSchema,
        pixel_mean,
        pixel_std,
        id_weight: float = 8.0,
        loss_kwargs: Optional[dict] = None,
    ):
        super().__init__(pixel_mean, pixel_std)
        if not isinstance(heads, APRHead):
            raise ValueError(f"APR needs an APRHead, got {type(heads).__name__}")
        if list(heads.attr_num_classes) != list(schema.num_classes):
            raise ValueError(f"APRHead attribute classes {heads.attr_num_classes} differ from the schema's "
                             f"{schema.num_classes} ({schema.names})")
        self.loss_kwargs = checked_loss_kwargs("APR", loss_kwargs, SUPPORTED_LOSSES)
        self.id_weight = float(id_weight)

        self.backbone = backbone
        self.heads = heads  # named "heads" so SOLVER.HEADS_LR_FACTOR applies, as for Baseline
        self.schema = schema

    @classmethod
    def from_config(cls, cfg):
        if "attributes" not in cfg.INPUT.EXTRA_FIELDS:
            raise ValueError("APR trains on attribute labels: add 'attributes' to INPUT.EXTRA_FIELDS "
                             "(and use an attribute dataset, e.g. Market1501Attr, DukeMTMCAttr, SyntheticMarket)")
        schema = schema_from_config(cfg)
        name = cfg.MODEL.HEADS.NAME
        head_cls = REID_HEADS_REGISTRY.get(name)
        if name == "EmbeddingHead":
            # a stock FastReID config (e.g. bagtricks) switched to APR: its MODEL.HEADS settings
            # (pooling, BN neck, classifier type) configure the APR head
            head_cls = APRHead
            logger.info("APR: MODEL.HEADS.NAME is EmbeddingHead; using APRHead with the same MODEL.HEADS settings")
        elif not (isinstance(head_cls, type) and issubclass(head_cls, APRHead)):
            raise ValueError(f"APR needs MODEL.HEADS.NAME 'APRHead' (or 'EmbeddingHead', replaced by APRHead), "
                             f"got '{name}'")
        return {
            "backbone": build_backbone(cfg),
            "heads": head_cls(cfg, schema=schema),
            "schema": schema,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "id_weight": cfg.MODEL.APR.ID_WEIGHT,
            "loss_kwargs": loss_kwargs_from_cfg(cfg),
        }

    def forward(self, batched_inputs):
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images)
        if not self.training:
            return self.heads(features)

        if isinstance(batched_inputs, dict) and "attributes" not in batched_inputs:
            raise ValueError("APR: attribute annotations ('attributes') are missing in training; add "
                             "'attributes' to INPUT.EXTRA_FIELDS and use an attribute dataset")
        targets = self.batch_field(batched_inputs, "targets").long()
        # PreciseBN convention of FastReID (negative targets -> all zero), without touching the input
        if targets.sum() < 0:
            targets = torch.zeros_like(targets)
        attr_targets = self.schema.targets(self.batch_field(batched_inputs, "attributes")).to(self.device)
        outputs = self.heads(features, targets)
        return self.losses(outputs, targets, attr_targets)

    def losses(self, outputs: Dict[str, object], targets: torch.Tensor,
               attr_targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        """lambda * L_ID (``loss_id``), (1/M) sum_j L_att_j (``loss_attr``), optional ``loss_triplet``."""
        names = self.loss_kwargs["loss_names"]
        attr_logits = outputs["attr_logits"]
        storage = _event_storage()
        if storage is not None:
            log_accuracy(outputs["pred_class_logits"].detach(), targets)
            accs = attribute_accuracy([lg.detach() for lg in attr_logits], attr_targets)
            for name, acc in zip(self.schema.names, accs):
                if acc is not None:
                    storage.put_scalar(f"attr_acc/{name}", acc)
            valid = [a for a in accs if a is not None]
            if valid:
                storage.put_scalar("attr_accuracy", sum(valid) / len(valid))

        loss_dict = {}
        if "CrossEntropyLoss" in names:
            ce = self.loss_kwargs["ce"]
            loss_dict["loss_id"] = cross_entropy_loss(
                outputs["cls_outputs"], targets, ce.get("eps", 0.0), ce.get("alpha", 0.2)
            ) * ce.get("scale", 1.0) * self.id_weight
        loss_dict["loss_attr"] = attribute_loss(attr_logits, attr_targets)
        if "TripletLoss" in names:
            tri = self.loss_kwargs["tri"]
            loss_dict["loss_triplet"] = triplet_loss(
                outputs["features"], targets, tri.get("margin", 0.3), tri.get("norm_feat", False),
                tri.get("hard_mining", True)
            ) * tri.get("scale", 1.0)
        return loss_dict
