"""Train/test loaders: FastReID's loaders and samplers around :class:`ExtCommDataset`.

Datasets are looked up in ``DATASETS.ROOT`` (see :func:`fastreid_ext.config.dataset_root`), and
a missing dataset folder is reported with the folder that was searched.
"""

from __future__ import annotations

import logging

from fastreid.data import build_reid_test_loader, build_reid_train_loader
from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.data.transforms import build_transforms
from fastreid.utils import comm

from ..config import dataset_root
from .common import ExtCommDataset
from .keypoints import KeypointTransform

logger = logging.getLogger(__name__)


def load_dataset(cfg, name: str, **kwargs):
    """Instantiate registered dataset ``name`` under the configured root, with clear errors."""
    root = dataset_root(cfg)
    try:
        cls = DATASET_REGISTRY.get(name)
    except KeyError:
        known = ", ".join(sorted(DATASET_REGISTRY._obj_map))
        raise KeyError(f"unknown dataset '{name}' in DATASETS; registered: {known}") from None
    if cfg.DATASETS.ATTRIBUTE_FILE:  # read by the *Attr datasets; other datasets ignore it
        kwargs.setdefault("attribute_file", cfg.DATASETS.ATTRIBUTE_FILE)
    try:
        return cls(root=root, **kwargs)
    except RuntimeError as e:  # FastReID's check_before_run: '"<dir>" is not found'
        if "is not found" in str(e):
            raise FileNotFoundError(f"dataset {name}: {e} (searched under DATASETS.ROOT / "
                                    f"$FASTREID_DATASETS = '{root}')") from None
        raise


def _ext_dataset(cfg, items, is_train: bool, relabel: bool) -> ExtCommDataset:
    fields = tuple(cfg.INPUT.EXTRA_FIELDS)
    kp_tf = KeypointTransform(cfg, is_train) if {"keypoints", "heatmaps"} & set(fields) else None
    return ExtCommDataset(items, build_transforms(cfg, is_train=is_train), relabel=relabel,
                          extra_fields=fields, keypoint_transform=kp_tf,
                          heatmap_size=cfg.INPUT.HEATMAP.SIZE, sigma=cfg.INPUT.HEATMAP.SIGMA)


def build_train_set(cfg, names=None) -> ExtCommDataset:
    """Training set of ``names`` (default DATASETS.NAMES), relabelled, with extra fields."""
    items = []
    for name in names or cfg.DATASETS.NAMES:
        data = load_dataset(cfg, name, combineall=cfg.DATASETS.COMBINEALL)
        if comm.is_main_process():
            data.show_train()
        items.extend(data.train)
    return _ext_dataset(cfg, items, is_train=True, relabel=True)


def build_test_set(cfg, name: str):
    """``(query + gallery dataset, num_query)`` for test dataset ``name``."""
    data = load_dataset(cfg, name)
    if comm.is_main_process():
        data.show_test()
    return _ext_dataset(cfg, data.query + data.gallery, is_train=False, relabel=False), len(data.query)


def build_train_loader(cfg, train_set=None):
    """FastReID's train loader (its samplers, batch size, workers) over our dataset."""
    return build_reid_train_loader(cfg, train_set=train_set or build_train_set(cfg))


def build_test_loader(cfg, name: str):
    """FastReID's test loader over our dataset; returns ``(loader, num_query)``."""
    test_set, num_query = build_test_set(cfg, name)
    return build_reid_test_loader(test_set=test_set, test_batch_size=cfg.TEST.IMS_PER_BATCH,
                                  num_query=num_query, num_workers=cfg.DATALOADER.NUM_WORKERS)


def attribute_fields(cfg) -> list[str]:
    """Attribute field names of the batch's ``attributes``: MODEL.ATTRIBUTES.FIELDS, else those of
    the first training dataset that has an attribute file."""
    if cfg.MODEL.ATTRIBUTES.FIELDS:
        return list(cfg.MODEL.ATTRIBUTES.FIELDS)
    for name in cfg.DATASETS.NAMES:
        table = getattr(load_dataset(cfg, name), "attributes", None)
        if table is not None:
            return list(table.names)
    raise ValueError(f"no attribute fields: none of DATASETS.NAMES {list(cfg.DATASETS.NAMES)} has an "
                     "attribute file; use an attribute dataset (e.g. Market1501Attr, SyntheticMarket) "
                     "or set MODEL.ATTRIBUTES.FIELDS")
