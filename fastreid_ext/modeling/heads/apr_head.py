# encoding: utf-8
"""APR's head (Lin et al., "Improving Person Re-identification by Attribute and Identity Learning",
Pattern Recognition 95, 2019), registered as the FastReID head ``APRHead``, with the Attribute
Re-weighting Module (ARM, Eqs. 3-4).

The paper-to-code map and the choices the paper leaves open are documented with the model,
:mod:`fastreid_ext.modeling.meta_arch.apr` (meta-architecture ``APR``, which adds the objective).
"""

from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fastreid.config import configurable
from fastreid.layers import any_softmax, get_norm, pooling
from fastreid.layers.weight_init import weights_init_kaiming
from fastreid.modeling.heads.build import REID_HEADS_REGISTRY

from ...data.attributes import AttributeSchema
from ..common import attribute_schema

__all__ = ["ARM", "APRHead", "attribute_scores", "arm_input_dim", "ARM_INPUTS", "TEST_FEATURES"]

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
        schema = schema if schema is not None else attribute_schema(cfg)
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
