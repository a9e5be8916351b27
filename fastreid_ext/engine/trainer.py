"""``ExtTrainer``: FastReID's ``DefaultTrainer`` with fastreid-ext's data path and checkpointing.

It changes only what FastReID lets a subclass change (the build_* hooks and the hook list):
datasets under ``DATASETS.ROOT`` with per-image extra fields (:mod:`fastreid_ext.data.build`),
person-search datasets (whole frames; :mod:`fastreid_ext.data.search.loader`, :class:`SearchEvaluator`),
attribute metrics beside Rank-k/mAP when batches carry attributes
(:class:`~fastreid_ext.evaluation.attr_evaluation.AttrReidEvaluator`),
atomic checkpoints with a corrupt-checkpoint fallback on ``--resume``
(:class:`~fastreid_ext.engine.checkpoint.SafeCheckpointer`), ``SOLVER.LOG_PERIOD`` for the
metric writers, values derived from the data resolved once (:meth:`ExtTrainer.auto_scale_hyperparams`)
and evaluation in the project's output mode (:meth:`ExtTrainer.test`). The training loop, evaluator, hooks and event storage are FastReID's.
"""

from __future__ import annotations

import json
import logging
import os

from fastreid.engine import DefaultTrainer, hooks
from fastreid.utils import comm
from fastreid.utils.env import seed_all_rng

from ..data.build import build_test_loader, build_train_loader, resolve_attribute_fields
from ..evaluation.attr_evaluation import AttrReidEvaluator
from ..evaluation.reid_evaluation import ExtReidEvaluator
from ..evaluation.search_evaluator import SearchEvaluator
from ..data.search.loader import build_search_test_loader, build_search_train_loader, is_search_dataset
from ..modeling.common import attribute_schema
from ..errors import user_input
from .checkpoint import SafeCheckpointer, load_inference_weights
from .inference import InferenceOutputs
from .run_lock import OutputDirLock

logger = logging.getLogger(__name__)


class ExtTrainer(DefaultTrainer):
    """DefaultTrainer + extra fields, dataset root, safe checkpoints, configurable log period, and one
    training run per OUTPUT_DIR (:class:`~fastreid_ext.engine.run_lock.OutputDirLock`, taken by the main
    process before anything is built or written, released when :meth:`train` ends)."""

    def __init__(self, cfg):
        if cfg.SEED >= 0:  # before the model and the samplers draw their random numbers
            seed_all_rng(cfg.SEED + comm.get_rank())
        self._run_lock = None
        if comm.is_main_process() and cfg.OUTPUT_DIR:
            self._run_lock = OutputDirLock(cfg.OUTPUT_DIR).acquire()
        try:
            super().__init__(cfg)
        except BaseException:
            self.release_output_dir()
            raise

    def release_output_dir(self) -> None:
        """Release the OUTPUT_DIR lock (done by :meth:`train`; for trainers that never train)."""
        if self._run_lock is not None:
            self._run_lock.release()

    def train(self):
        try:
            results = super().train()
        finally:
            self.release_output_dir()
        if comm.is_main_process() and self.cfg.OUTPUT_DIR and results is not None:
            # the last evaluation, machine-readable (FastReID's metrics.json can miss the final one)
            path = os.path.join(self.cfg.OUTPUT_DIR, "final_eval.json")
            with open(path + ".tmp", "w") as f:
                json.dump(_plain(results), f, indent=1)
            os.replace(path + ".tmp", path)
        return results

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
        with user_input("building the training set"):  # errors here are the user's (fastreid_ext.errors)
            if any(is_search_dataset(n) for n in cfg.DATASETS.NAMES):  # whole frames: person search (NPSM)
                return build_search_train_loader(cfg)
            return build_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        with user_input(f"building the test set {dataset_name}"):
            if is_search_dataset(dataset_name):
                return build_search_test_loader(cfg, dataset_name)
            return build_test_loader(cfg, dataset_name)

    @staticmethod
    def auto_scale_hyperparams(cfg, num_classes):
        """FastReID's (``MODEL.HEADS.NUM_CLASSES`` from the training set) plus the values fastreid-ext
        derives from the data (``MODEL.ATTRIBUTES.FIELDS``), resolved once here and written to the
        run's ``config.yaml``; models and evaluators then read them from the config."""
        cfg = DefaultTrainer.auto_scale_hyperparams(cfg, num_classes)
        resolved = resolve_attribute_fields(cfg)
        if resolved is not cfg and comm.is_main_process() and cfg.OUTPUT_DIR:
            path = os.path.join(cfg.OUTPUT_DIR, "config.yaml")
            with open(path + ".tmp", "w") as f:  # atomic: a crash never leaves half a config
                f.write(resolved.dump())
            os.replace(path + ".tmp", path)
        return resolved

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_dir=None):
        if is_search_dataset(dataset_name):  # (loader, its SearchTestSet): person-search metrics
            data_loader, test_set = cls.build_test_loader(cfg, dataset_name)
            out = output_dir or (os.path.join(cfg.OUTPUT_DIR, "search", dataset_name) if cfg.OUTPUT_DIR else None)
            return data_loader, SearchEvaluator(cfg, test_set, out)
        data_loader, num_query = cls.build_test_loader(cfg, dataset_name)
        if "attributes" in cfg.INPUT.EXTRA_FIELDS and cfg.TEST.ATTRIBUTES.ENABLED:
            return data_loader, AttrReidEvaluator(cfg, num_query, attribute_schema(cfg), output_dir)
        return data_loader, ExtReidEvaluator(cfg, num_query, output_dir)

    @classmethod
    def test(cls, cfg, model):
        """FastReID's ``DefaultTrainer.test`` with the model in the project's output mode
        (:class:`~fastreid_ext.engine.inference.InferenceOutputs`): the evaluators get the feature and
        the model's extras (attribute probabilities) from one forward pass."""
        return super().test(cfg, InferenceOutputs(model))


def _plain(obj):
    """JSON-ready copy of FastReID's (nested) results dict."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    try:
        return float(obj)
    except (TypeError, ValueError):
        return str(obj)


def load_model(config_file: str, opts=(), eval_mode: bool = True):
    """``(cfg, model)`` for tools: config (FastReID + ours + YAML + overrides), model on
    ``MODEL.DEVICE`` with ``MODEL.WEIGHTS`` loaded (no ImageNet download). Warns without weights.
    Weights that do not fit the model (beyond parameters inference does not use) or a file that is not
    a checkpoint are errors (:func:`~fastreid_ext.engine.checkpoint.load_inference_weights`)."""
    from ..config import get_ext_cfg, merge_checked

    cfg = get_ext_cfg()
    merge_checked(cfg, config_file, list(opts))
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg = resolve_attribute_fields(cfg)
    cfg.freeze()
    model = ExtTrainer.build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        load_inference_weights(model, cfg)
    else:
        logger.warning("no MODEL.WEIGHTS given: using an untrained model")
    return cfg, (model.eval() if eval_mode else model)
