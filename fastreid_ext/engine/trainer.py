"""``ExtTrainer``: FastReID's ``DefaultTrainer`` with fastreid-ext's data path and checkpointing.

It changes only what FastReID lets a subclass change (the build_* hooks and the hook list):
datasets under ``DATASETS.ROOT`` with per-image extra fields (:mod:`fastreid_ext.data.build`),
attribute metrics beside Rank-k/mAP when batches carry attributes
(:class:`~fastreid_ext.evaluation.attr_evaluation.AttrReidEvaluator`),
atomic checkpoints with a corrupt-checkpoint fallback on ``--resume``
(:class:`~fastreid_ext.engine.checkpoint.SafeCheckpointer`), and ``SOLVER.LOG_PERIOD`` for the
metric writers. The training loop, evaluator, hooks and event storage are FastReID's.
"""

from __future__ import annotations

import logging

from fastreid.engine import DefaultTrainer, hooks
from fastreid.evaluation import ReidEvaluator

from ..data.attributes import AttributeSchema
from ..data.build import attribute_fields, build_test_loader, build_train_loader
from ..evaluation.attr_evaluation import AttrReidEvaluator
from .checkpoint import SafeCheckpointer

logger = logging.getLogger(__name__)


class ExtTrainer(DefaultTrainer):
    """DefaultTrainer + extra fields, dataset root, safe checkpoints, configurable log period."""

    def build_hooks(self):
        # DefaultTrainer.__init__ made a plain Checkpointer just before calling build_hooks;
        # SafeCheckpointer only adds behaviour, so upgrading the instance keeps its state.
        self.checkpointer.__class__ = SafeCheckpointer
        ret = super().build_hooks()
        for h in ret:
            if isinstance(h, hooks.PeriodicWriter):
                h._period = max(1, int(self.cfg.SOLVER.LOG_PERIOD))
        return ret

    @classmethod
    def build_train_loader(cls, cfg):
        logger.info("Prepare training set")
        return build_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_dir=None):
        data_loader, num_query = cls.build_test_loader(cfg, dataset_name)
        if "attributes" in cfg.INPUT.EXTRA_FIELDS and cfg.TEST.ATTRIBUTES.ENABLED:
            schema = AttributeSchema(attribute_fields(cfg), cfg.MODEL.ATTRIBUTES.GROUP_COLOURS)
            return data_loader, AttrReidEvaluator(cfg, num_query, schema, output_dir)
        return data_loader, ReidEvaluator(cfg, num_query, output_dir)


def load_model(config_file: str, opts=(), eval_mode: bool = True):
    """``(cfg, model)`` for tools: config (FastReID + ours + YAML + overrides), model on
    ``MODEL.DEVICE`` with ``MODEL.WEIGHTS`` loaded (no ImageNet download). Warns without weights."""
    from fastreid.utils.checkpoint import Checkpointer

    from ..config import get_ext_cfg, merge_checked

    cfg = get_ext_cfg()
    merge_checked(cfg, config_file, list(opts))
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.freeze()
    model = ExtTrainer.build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        Checkpointer(model).load(cfg.MODEL.WEIGHTS)
    else:
        logger.warning("no MODEL.WEIGHTS given: using an untrained model")
    return cfg, (model.eval() if eval_mode else model)
