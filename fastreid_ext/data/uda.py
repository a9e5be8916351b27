"""Data of domain adaptation: the unlabelled target, two views per image, and a loader whose labels
are the epoch's pseudo-labels.

Contract (``DATASETS.TARGETS``): the target's identity labels are never read for training. The target
items are stripped to ``(path, camid[, extras])`` when the datasets are loaded
(:func:`load_target_items`); the true pids are kept aside in :class:`TargetSet` for logging NMI / ARI of the
pseudo-labels only, and only when the dataset has them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import torch

from .. import compat

compat.apply()

from fastreid.data import build_reid_test_loader, build_reid_train_loader, samplers  # noqa: E402
from fastreid.data.transforms import build_transforms  # noqa: E402
from fastreid.utils import comm  # noqa: E402

from .build import _ext_dataset, _unreadable, _with_keypoints, load_dataset  # noqa: E402
from .common import ExtCommDataset  # noqa: E402

logger = logging.getLogger(__name__)

__all__ = ["TargetSet", "TwoViewDataset", "PseudoLabelLoader", "load_target_items", "target_feature_loader"]


@dataclass
class TargetSet:
    """The unlabelled target train images: ``items`` = ``(path, -1, camid[, extras])`` (pid erased),
    ``true_pids`` = the dataset's own labels, for logging only (None when it has none)."""

    names: List[str]
    items: list
    true_pids: Optional[np.ndarray] = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.items)


def load_target_items(cfg, with_keypoints: bool = False) -> TargetSet:
    """The train split of every ``DATASETS.TARGETS`` dataset, identity labels erased.

    ``with_keypoints``: attach the target's keypoint files (``MODEL.MMT.KEYPOINTS target``)."""
    names = list(cfg.DATASETS.TARGETS)
    if not names:
        raise ValueError("DATASETS.TARGETS is empty: domain adaptation needs at least one unlabelled target set")
    overlap = sorted(set(names) & set(cfg.DATASETS.NAMES))
    if overlap:
        logger.warning("DATASETS.TARGETS %s is also a source in DATASETS.NAMES: the 'target' is the source domain, "
                       "so this adapts to nothing new", overlap)
    items, true = [], []
    for name in names:
        data = load_dataset(cfg, name)
        if comm.is_main_process():
            data.show_train()
        its = _with_keypoints(cfg, data, data.train, name) if with_keypoints else data.train
        for it in its:
            true.append(f"{name}/{it[1]}")  # kept aside for logging NMI/ARI; never enters training
            items.append((it[0], -1, it[2], *it[3:]))
    bad = _unreadable(cfg, items, f"the target set {'+'.join(names)}")
    keep = [i for i, it in enumerate(items) if it[0] not in bad]
    items = [items[i] for i in keep]
    true = [true[i] for i in keep]
    if not items:
        raise ValueError(f"the target set {'+'.join(names)} has no training image")
    _, codes = np.unique(np.asarray(true), return_inverse=True)
    return TargetSet(names, items, codes.astype(np.int64))


class TwoViewDataset(torch.utils.data.Dataset):
    """Two independently augmented views of each image (MMT: net 1 and mean net 1 see ``images``,
    net 2 and mean net 2 see ``images2``). Per-view fields (``heatmaps``, ``keypoints``) get the same
    suffix ``2`` for the second view."""

    VIEW_FIELDS = ("images", "heatmaps", "keypoints")

    def __init__(self, dataset: ExtCommDataset):
        self.dataset = dataset
        self.img_items = dataset.img_items  # what FastReID's identity samplers read

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        a = self.dataset[index]
        b = self.dataset[index]
        for k in self.VIEW_FIELDS:
            if k in b:
                a[k + "2"] = b[k]
        return a


class PseudoLabelLoader:
    """The training loader of adaptation: an endless iterator of two-view target batches labelled with
    the current pseudo-labels, rebuilt by :meth:`set_labels` at every epoch (outliers, label -1, left out).

    FastReID's ``SimpleTrainer`` keeps one iterator of its loader for the whole run; this object is that
    iterator, and each :meth:`set_labels` swaps the inner loader (FastReID's identity sampler, batch
    size and workers) under it. With ``MODEL.MMT.KEYPOINTS source`` each batch also carries a labelled
    source batch with heatmaps, ``batch["source"]``.

    ``dataset`` is what FastReID's trainer reads before the first epoch: its ``num_classes`` is 1 (the
    classifiers are sized at each epoch start) and its length is ``UDA.ITERS_PER_EPOCH`` batches, so the
    trainer's epoch is the adaptation epoch.
    """

    class _Placeholder:
        def __init__(self, length: int):
            self.num_classes, self._len = 1, length

        def __len__(self):
            return self._len

    def __init__(self, cfg, target: TargetSet, source_set: Optional[ExtCommDataset] = None):
        self.cfg = cfg
        self.target = target
        self.dataset = self._Placeholder(cfg.UDA.ITERS_PER_EPOCH * cfg.SOLVER.IMS_PER_BATCH)
        tcfg = cfg.clone()
        tcfg.defrost()
        if cfg.MODEL.MMT.KEYPOINTS != "target":
            tcfg.INPUT.EXTRA_FIELDS = [f for f in cfg.INPUT.EXTRA_FIELDS if f not in ("keypoints", "heatmaps")]
        tcfg.INPUT.EXTRA_FIELDS = [f for f in tcfg.INPUT.EXTRA_FIELDS if f != "attributes"]
        self._tcfg = tcfg
        self._inner = None
        self._source = None
        if source_set is not None:
            self._source = iter(build_reid_train_loader(
                train_set=source_set, sampler=samplers.TrainingSampler(len(source_set)),
                total_batch_size=cfg.MODEL.MMT.SOURCE_IMS_PER_BATCH * comm.get_world_size(),
                num_workers=cfg.DATALOADER.NUM_WORKERS))

    def set_labels(self, labels: np.ndarray) -> None:
        """Train on ``labels`` (one per target image, 0..C-1, -1 = outlier) from now on."""
        labels = np.asarray(labels, dtype=np.int64)
        if len(labels) != len(self.target):
            raise ValueError(f"{len(labels)} pseudo-labels for {len(self.target)} target images")
        keep = np.flatnonzero(labels >= 0)
        items = [(self.target.items[i][0], int(labels[i]), self.target.items[i][2], *self.target.items[i][3:])
                 for i in keep]
        cfg = self._tcfg
        per_batch = cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size() // cfg.DATALOADER.NUM_INSTANCE
        num = len(np.unique(labels[keep]))
        if num < per_batch:  # FastReID's identity sampler would wait forever for enough identities
            raise ValueError(f"only {num} pseudo-label clusters, and a batch needs {per_batch} identities "
                             f"(SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH} / DATALOADER.NUM_INSTANCE "
                             f"{cfg.DATALOADER.NUM_INSTANCE}): lower the batch, or raise UDA.CLUSTER.EPS / RHO")
        ds = TwoViewDataset(_ext_dataset(cfg, items, is_train=True, relabel=False))
        mini = cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size()
        sampler = samplers.NaiveIdentitySampler(ds.img_items, mini, cfg.DATALOADER.NUM_INSTANCE)
        self._inner = None  # let the previous loader's workers go first
        loader = build_reid_train_loader(train_set=ds, sampler=sampler, total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
                                         num_workers=cfg.DATALOADER.NUM_WORKERS)
        self._inner = iter(loader)

    def __iter__(self):
        return self

    def __next__(self):
        if self._inner is None:
            raise RuntimeError("PseudoLabelLoader: no pseudo-labels yet (the pseudo-label hook sets them at each "
                               "epoch start)")
        batch = next(self._inner)
        if self._source is not None:
            batch["source"] = next(self._source)
        return batch


def target_feature_loader(cfg, target: TargetSet):
    """Test-time loader (test transforms, no extra fields) over the target train images, in their order;
    with several processes each takes its contiguous share (FastReID's ``InferenceSampler``)."""
    items = [(it[0], 0, it[2]) for it in target.items]
    ds = ExtCommDataset(items, build_transforms(cfg, is_train=False), relabel=False)
    return build_reid_test_loader(test_set=ds, test_batch_size=cfg.TEST.IMS_PER_BATCH, num_query=0,
                                  num_workers=cfg.DATALOADER.NUM_WORKERS)[0]
