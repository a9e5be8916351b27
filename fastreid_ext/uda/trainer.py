"""``UDATrainer``: FastReID's trainer (through :class:`~fastreid_ext.engine.ExtTrainer`) for Mutual
Mean-Teaching domain adaptation, selected by ``tools/train_net.py`` when ``DATASETS.TARGETS`` is set.

The training loop, optimizer, LR scheduler, evaluation, checkpointing and writers are FastReID's; MMT
adds the model (:class:`~fastreid_ext.modeling.meta_arch.mmt.MMT`, the four nets), the loader
(:class:`~fastreid_ext.data.uda.PseudoLabelLoader`, two views, labels of the epoch) and two hooks
(:mod:`fastreid_ext.uda.hooks`). Config contract:

* ``DATASETS.NAMES``: the labelled source; ``DATASETS.TARGETS``: the unlabelled target train sets
  (their identity labels are never read); ``DATASETS.TESTS``: evaluation.
* Source weights: ``MODEL.WEIGHTS`` (net 1 and mean net 1) and ``MODEL.MMT.WEIGHTS2`` (net 2, mean net 2;
  empty = ``MODEL.WEIGHTS`` for both, the nets then differ by their random streams: views, sampling).
  With no ``MODEL.WEIGHTS``, source pre-training runs first, once per seed of ``UDA.PRETRAIN.SEEDS``
  (MMT: two), each a normal FastReID run of ``MODEL.MMT.NET`` in ``OUTPUT_DIR/source_pretrain/seed<S>``
  (``UDA.PRETRAIN.MAX_EPOCH`` / ``STEPS`` / ``WARMUP_ITERS`` / ``OPTS``); a finished one is reused, an
  interrupted one resumed. Its evaluation on ``DATASETS.TESTS`` is the direct-transfer result.
* The reported model is the last epoch's (``UDA.REPORTED_MODEL last``): no ``model_best`` is kept,
  since the only test set is the target's. ``model_final.pth`` holds all four nets; the test net alone
  (``MODEL.MMT.TEST_NET``) is also saved as ``model_final_<net>.pth``, loadable with the net's config.
* ``--resume`` in the middle of adaptation restores the four nets (the EMA state is the mean nets'
  weights), the optimizer, the scheduler and the pseudo-label step's state (the first epoch's eps,
  the labels, the statistics); the next epoch recomputes the labels from the restored mean nets, as
  the uninterrupted run does.
"""

from __future__ import annotations

import logging
import os

import torch
from fastreid.engine import hooks
from fastreid.utils import comm
from fastreid.utils.env import seed_all_rng

from ..engine.checkpoint import SafeCheckpointer
from ..engine.trainer import ExtTrainer
from ..errors import user_input
from .hooks import MeanTeacherHook, PseudoLabelHook, unwrap, wrap_ddp

logger = logging.getLogger(__name__)

__all__ = ["UDATrainer", "pretrain_sources"]


class _FinalCheckpointer(hooks.PeriodicCheckpointer):
    """FastReID's periodic checkpointer without ``model_best`` (chosen on the test set, here the target's),
    keeping the newest ``keep`` periodic checkpoints (four nets + optimizer: hundreds of MB each)."""

    def __init__(self, checkpointer, period: int, keep: int = 2):
        super().__init__(checkpointer, period)
        self.keep = max(1, int(keep))

    def after_epoch(self):
        self.step(self.trainer.epoch, metric=-1.0)

    def step(self, epoch: int, **kwargs):
        self.best_metric = float("inf")  # never "better": no model_best
        super().step(epoch, **kwargs)
        folder = self.checkpointer.save_dir
        old = sorted(f for f in os.listdir(folder) if f.startswith("model_0") and f.endswith(".pth"))[:-self.keep]
        for name in old:
            os.remove(os.path.join(folder, name))


def _pretrain_config(cfg, seed: int, output_dir: str):
    from ..modeling.meta_arch.mmt import net_config

    p = net_config(cfg)
    p.DATASETS.TARGETS = ()
    p.SEED = int(seed)
    p.OUTPUT_DIR = output_dir
    p.MODEL.HEADS.NUM_CLASSES = 0
    p.MODEL.WEIGHTS = ""
    p.SOLVER.MAX_EPOCH = cfg.UDA.PRETRAIN.MAX_EPOCH
    p.SOLVER.STEPS = list(cfg.UDA.PRETRAIN.STEPS)
    p.SOLVER.WARMUP_ITERS = cfg.UDA.PRETRAIN.WARMUP_ITERS
    p.SOLVER.CHECKPOINT_PERIOD = cfg.UDA.PRETRAIN.CHECKPOINT_PERIOD
    p.merge_from_list(list(cfg.UDA.PRETRAIN.OPTS))
    p.freeze()
    return p


def pretrain_sources(cfg, resume: bool = True) -> list:
    """Source pre-training, one FastReID run of ``MODEL.MMT.NET`` per seed of ``UDA.PRETRAIN.SEEDS`` (at
    most two); returns their ``model_final.pth`` paths. A finished run is reused; an interrupted one is
    resumed from its last checkpoint."""
    seeds = list(cfg.UDA.PRETRAIN.SEEDS)[:2]
    if not seeds:
        raise ValueError("UDA.PRETRAIN.SEEDS is empty and MODEL.WEIGHTS is not set: give source weights or a seed")
    paths = []
    for seed in seeds:
        out = os.path.join(cfg.OUTPUT_DIR, "source_pretrain", f"seed{seed}")
        final = os.path.join(out, "model_final.pth")
        if os.path.isfile(final):
            logger.info("source pre-training, seed %d: reusing %s", seed, final)
        else:
            logger.info("source pre-training on %s, seed %d, %d epochs -> %s", list(cfg.DATASETS.NAMES), seed,
                        cfg.UDA.PRETRAIN.MAX_EPOCH, out)
            trainer = ExtTrainer(_pretrain_config(cfg, seed, out))
            trainer.resume_or_load(resume=True)  # continues an interrupted pre-training, else starts it
            trainer.train()
            comm.synchronize()
        paths.append(final)
    return paths


class UDATrainer(ExtTrainer):
    """MMT adaptation on FastReID's trainer (module docstring)."""

    def __init__(self, cfg):
        if cfg.MODEL.META_ARCHITECTURE != "MMT":
            raise ValueError(f"DATASETS.TARGETS is set (domain adaptation) but MODEL.META_ARCHITECTURE is "
                             f"{cfg.MODEL.META_ARCHITECTURE!r}: use MMT (with MODEL.MMT.NET "
                             f"{cfg.MODEL.META_ARCHITECTURE!r}); see configs/UDA/")
        if cfg.MODEL.MMT.KEYPOINTS not in ("source", "target", "none"):
            raise ValueError(f"MODEL.MMT.KEYPOINTS is {cfg.MODEL.MMT.KEYPOINTS!r}; use source, target or none")
        if cfg.UDA.REPORTED_MODEL != "last":
            raise ValueError(f"UDA.REPORTED_MODEL is {cfg.UDA.REPORTED_MODEL!r}; only 'last' is supported (the "
                             "target's test set must not choose the model)")
        super().__init__(cfg)

    @classmethod
    def build_optimizer(cls, cfg, model):
        """FastReID's optimizer over separate parameters: the classifiers change size every epoch, which
        a contiguous parameter buffer (FastReID's default) cannot follow."""
        from fastreid.engine import defaults

        return defaults.build_optimizer(cfg, model, contiguous=False)

    @classmethod
    def build_train_loader(cls, cfg):
        from ..data.build import build_train_set
        from ..data.uda import PseudoLabelLoader, load_target_items

        rbnet = cfg.MODEL.MMT.NET == "RBNet"
        with user_input("building the target set"):
            target = load_target_items(cfg, with_keypoints=rbnet and cfg.MODEL.MMT.KEYPOINTS == "target")
            source = build_train_set(cfg) if rbnet and cfg.MODEL.MMT.KEYPOINTS == "source" else None
        logger.info("domain adaptation: %d unlabelled target images from %s", len(target), target.names)
        return PseudoLabelLoader(cfg, target, source)

    def build_hooks(self):
        ret = super().build_hooks()
        loader = self.data_loader
        label_hook = PseudoLabelHook(self.cfg, loader.target, loader, self.cfg.OUTPUT_DIR if comm.is_main_process() else "")
        self.pseudo_label_hook = label_hook
        self.checkpointer.checkpointables["pseudo_labels"] = label_hook
        out = []
        for h in ret:
            if isinstance(h, hooks.PeriodicCheckpointer):
                h = _FinalCheckpointer(self.checkpointer, self.cfg.SOLVER.CHECKPOINT_PERIOD, self.cfg.UDA.KEEP_CHECKPOINTS)
            out.append(h)
        # labels before anything else of the epoch; the EMA right after the optimizer step
        return [label_hook, MeanTeacherHook(), *out, _SaveTestNet(self.cfg)]

    def resume_or_load(self, resume=True):
        """``--resume`` with a checkpoint: everything from it. Otherwise both nets from the source weights
        (MODEL.WEIGHTS / MODEL.MMT.WEIGHTS2) and the mean nets as their copies; with no MODEL.WEIGHTS, source
        pre-training is left to :meth:`train` (a training run, not a step of reading user input)."""
        model = unwrap(self.model)
        self._pretrain = None
        if resume and self.checkpointer.has_checkpoint():
            super().resume_or_load(resume=True)
            if comm.get_world_size() > 1:
                self._trainer.model = wrap_ddp(model)
            return
        if not self.cfg.MODEL.WEIGHTS:
            self._pretrain = {"resume": resume}
            return
        self._load_source(self.cfg.MODEL.WEIGHTS, self.cfg.MODEL.MMT.WEIGHTS2 or self.cfg.MODEL.WEIGHTS)

    def train(self):
        if getattr(self, "_pretrain", None) is not None:
            try:
                paths = pretrain_sources(self.cfg, self._pretrain["resume"])
                self._load_source(paths[0], paths[-1])
            except BaseException:
                self.release_output_dir()
                raise
            self._pretrain = None
        return super().train()

    def _load_source(self, w1: str, w2: str) -> None:
        model = unwrap(self.model)
        for net, path in (("net1", w1), ("net2", w2)):
            with user_input(f"loading the source weights of {net}"):
                SafeCheckpointer(getattr(model, net)).resume_or_load(path, resume=False)
        model.copy_to_mean_nets()
        if self.cfg.SEED >= 0:  # the adaptation's random stream depends on SEED, not on what pre-training drew
            seed_all_rng(self.cfg.SEED + comm.get_rank())
        if comm.get_world_size() > 1:
            self._trainer.model = wrap_ddp(model)


class _SaveTestNet(hooks.HookBase):
    """After training: the test net alone as ``model_final_<net>.pth`` (a checkpoint of MODEL.MMT.NET)."""

    def __init__(self, cfg):
        self.cfg = cfg

    def after_train(self):
        if not comm.is_main_process() or not self.cfg.OUTPUT_DIR or self.trainer.iter < self.trainer.max_iter:
            return
        net = self.cfg.MODEL.MMT.TEST_NET
        path = os.path.join(self.cfg.OUTPUT_DIR, f"model_final_{net}.pth")
        torch.save({"model": getattr(unwrap(self.trainer.model), net).state_dict()}, path + ".tmp")
        os.replace(path + ".tmp", path)
        logger.info("saved the test net %s alone to %s (load it with MODEL.META_ARCHITECTURE %s)", net, path,
                    self.cfg.MODEL.MMT.NET)

