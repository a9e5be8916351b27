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
  (registered in ``REID_HEADS_REGISTRY``; in ``modeling/heads/apr_head.py`` with :class:`ARM`).
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
  the registered ``AttributeCrossEntropyLoss`` (``average="all"``,
  :mod:`fastreid_ext.modeling.losses.attribute`); loss ``loss_attr``.
* Overall objective ``L = lambda * L_ID + (1/M) sum_j L_att_j`` (lambda = 8 in the paper):
  :meth:`APR.compute_losses` returns ``loss_id = lambda * L_ID`` and ``loss_attr = (1/M) sum_j L_att_j``;
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
from torch import nn

from fastreid.config import configurable
from fastreid.modeling.backbones import build_backbone
from fastreid.modeling.heads.build import REID_HEADS_REGISTRY
from fastreid.modeling.losses import log_accuracy
from fastreid.modeling.meta_arch.build import META_ARCH_REGISTRY

from ...data.attributes import IGNORE, AttributeSchema
from ..common import ReidMetaArch, attribute_schema, event_storage
from ..heads.apr_head import APRHead
from ..losses import build_losses, check_loss_inputs, compute_losses

logger = logging.getLogger(__name__)

__all__ = ["APR", "attribute_accuracy"]


def attribute_accuracy(logits: Sequence[torch.Tensor], targets: torch.Tensor) -> List[Optional[float]]:
    """Per-head accuracy over labelled images (None for a head with none)."""
    out = []
    for j, lg in enumerate(logits):
        t = targets[:, j]
        keep = t != IGNORE
        out.append(float((lg.argmax(1)[keep] == t[keep]).float().mean()) if keep.any() else None)
    return out


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
      "loss_triplet": ...}``: every loss of ``MODEL.LOSSES.NAME`` (registry) on the tensors
      ``logits`` (identity classifier on [neck(g), a]), ``features`` (g, ``MODEL.HEADS.NECK_FEAT``),
      ``targets``, ``attr_logits``, ``attr_targets``; identity losses reading ``logits`` are
      multiplied by lambda (``MODEL.APR.ID_WEIGHT``), CrossEntropyLoss is reported as ``loss_id``.
      ``AttributeCrossEntropyLoss`` (the attribute objective) is added when a stock config does not
      list it;
    * eval: the (B, D) retrieval feature (FastReID's contract); :meth:`inference` also gives the
      attribute probabilities.
    """

    #: tensors APR provides to the losses
    LOSS_INPUTS = ("logits", "features", "targets", "attr_logits", "attr_targets")

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        heads: APRHead,
        schema: AttributeSchema,
        pixel_mean,
        pixel_std,
        losses: nn.ModuleDict,
        id_weight: float = 8.0,
    ):
        super().__init__(pixel_mean, pixel_std)
        if not isinstance(heads, APRHead):
            raise ValueError(f"APR needs an APRHead, got {type(heads).__name__}")
        if list(heads.attr_num_classes) != list(schema.num_classes):
            raise ValueError(f"APRHead attribute classes {heads.attr_num_classes} differ from the schema's "
                             f"{schema.num_classes} ({schema.names})")
        check_loss_inputs("APR", losses, self.LOSS_INPUTS)
        self.id_weight = float(id_weight)

        self.backbone = backbone
        self.heads = heads  # named "heads" so SOLVER.HEADS_LR_FACTOR applies, as for Baseline
        self.schema = schema
        self.loss_fns = losses

    @classmethod
    def from_config(cls, cfg):
        if "attributes" not in cfg.INPUT.EXTRA_FIELDS:
            raise ValueError("APR trains on attribute labels: add 'attributes' to INPUT.EXTRA_FIELDS "
                             "(and use an attribute dataset, e.g. Market1501Attr, DukeMTMCAttr, SyntheticMarket)")
        schema = attribute_schema(cfg)
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
        names = list(cfg.MODEL.LOSSES.NAME)
        if "AttributeCrossEntropyLoss" not in names:
            logger.info("APR: MODEL.LOSSES.NAME %s has no AttributeCrossEntropyLoss; adding it (APR's attribute "
                        "objective)", names)
            names.append("AttributeCrossEntropyLoss")
        return {
            "backbone": build_backbone(cfg),
            "heads": head_cls(cfg, schema=schema),
            "schema": schema,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "id_weight": cfg.MODEL.APR.ID_WEIGHT,
            "losses": build_losses(cfg, names),
        }

    def inference(self, batched_inputs) -> Dict[str, object]:
        """Eval outputs: ``{"features": (B, D) retrieval feature, "attributes": [(B, K_j) softmax per
        head, schema order]}``."""
        return self.heads(self.backbone(self.preprocess_image(batched_inputs)))

    def forward(self, batched_inputs):
        if not self.training:
            return self.inference(batched_inputs)["features"]
        if isinstance(batched_inputs, dict) and "attributes" not in batched_inputs:
            raise ValueError("APR: attribute annotations ('attributes') are missing in training; add "
                             "'attributes' to INPUT.EXTRA_FIELDS and use an attribute dataset")
        targets = self.training_targets(batched_inputs)
        attr_targets = self.schema.targets(self.batch_field(batched_inputs, "attributes")).to(self.device)
        features = self.backbone(self.preprocess_image(batched_inputs))
        outputs = self.heads(features, targets)
        return self.compute_losses(outputs, targets, attr_targets)

    def compute_losses(self, outputs: Dict[str, object], targets: torch.Tensor,
                       attr_targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        """lambda * L_ID (``loss_id``), (1/M) sum_j L_att_j (``loss_attr``), and any other configured loss."""
        attr_logits = outputs["attr_logits"]
        storage = event_storage()
        if storage is not None:
            log_accuracy(outputs["pred_class_logits"].detach(), targets)
            accs = attribute_accuracy([lg.detach() for lg in attr_logits], attr_targets)
            for name, acc in zip(self.schema.names, accs):
                if acc is not None:
                    storage.put_scalar(f"attr_acc/{name}", acc)
            valid = [a for a in accs if a is not None]
            if valid:
                storage.put_scalar("attr_accuracy", sum(valid) / len(valid))
        tensors = {"logits": outputs["cls_outputs"], "features": outputs["features"], "targets": targets,
                   "attr_logits": attr_logits, "attr_targets": attr_targets}
        # lambda weighs the identity (classifier) losses
        id_losses = {name: self.id_weight for name, loss in self.loss_fns.items() if "logits" in loss.inputs}
        return compute_losses(self.loss_fns, tensors, keys={"CrossEntropyLoss": "loss_id"}, weights=id_losses)
