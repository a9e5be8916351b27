"""Train/test loaders: FastReID's loaders and samplers around :class:`ExtCommDataset`.

Datasets are looked up in ``DATASETS.ROOT`` (see :func:`fastreid_ext.config.dataset_root`), and
a missing dataset folder is reported with the folder that was searched. When INPUT.EXTRA_FIELDS asks
for keypoints or heatmaps, the items of every dataset get keypoints from the keypoint files
(``DATASETS.KEYPOINTS_DIR``; :mod:`fastreid_ext.data.dataset_keypoints`). Every image of a split is
checked before its dataset is built (``DATASETS.CHECK_IMAGES``, ``DATASETS.SKIP_UNREADABLE``;
:mod:`fastreid_ext.data.image_check`).
"""

from __future__ import annotations

import logging

from .. import compat  # FastReID compatibility patches before any fastreid import

compat.apply()

from fastreid.data import build_reid_test_loader, build_reid_train_loader  # noqa: E402
from fastreid.data.datasets import DATASET_REGISTRY  # noqa: E402
from fastreid.data.transforms import build_transforms  # noqa: E402
from fastreid.utils import comm  # noqa: E402

from . import datasets  # noqa: E402,F401  (registers our datasets)
from ..config import dataset_root  # noqa: E402
from .common import ExtCommDataset  # noqa: E402
from .dataset_keypoints import attach_keypoints  # noqa: E402
from .stored_heatmaps import locate_stored_heatmaps  # noqa: E402
from .image_check import scan_images, unreadable_message  # noqa: E402
from .keypoints import KeypointTransform  # noqa: E402

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


def _with_keypoints(cfg, data, items, name: str):
    """``items`` with keypoints from the keypoint files (:mod:`.dataset_keypoints`) when INPUT.EXTRA_FIELDS
    asks for keypoints or heatmaps; unchanged (no file read) otherwise."""
    if not {"keypoints", "heatmaps"} & set(cfg.INPUT.EXTRA_FIELDS):
        return items
    items = attach_keypoints(items, data, cfg.DATASETS.KEYPOINTS_DIR, name=name)
    if "heatmaps" in cfg.INPUT.EXTRA_FIELDS and cfg.INPUT.HEATMAP.SOURCE == "stored":
        # a pose model's own maps (tools/make_keypoints.py --save-heatmaps): where each image's are
        refs = locate_stored_heatmaps([it[0] for it in items], data, cfg.DATASETS.KEYPOINTS_DIR, name=name)
        items = [(*it[:3], {**it[3], "heatmap_ref": ref}, *it[4:]) for it, ref in zip(items, refs)]
    return items


def _unreadable(cfg, items, what: str) -> set:
    """Paths of ``items`` to drop because their image cannot be read (DATASETS.CHECK_IMAGES; empty when
    off). Unreadable images are a ValueError naming them, or, with DATASETS.SKIP_UNREADABLE, a warning.
    Every rank scans (no collective step that a failing rank could leave hanging; the ranks share the
    cache, written atomically), and all ranks drop the same items; only rank 0 shows a progress bar."""
    if not cfg.DATASETS.CHECK_IMAGES or not items:
        return set()
    scan = scan_images([it[0] for it in items], progress=comm.is_main_process(), what=what)
    if not scan.bad:
        return set()
    msg = unreadable_message(scan.bad, scan.checked, what)
    if not cfg.DATASETS.SKIP_UNREADABLE or len(scan.bad) == scan.checked:
        if len(scan.bad) > 50:
            logger.error(unreadable_message(scan.bad, scan.checked, what, limit=len(scan.bad)))
        raise ValueError(f"{msg}{' (all listed in the log above)' if len(scan.bad) > 50 else ''}\nFix or remove "
                         "them, or set DATASETS.SKIP_UNREADABLE True to leave them out"
                         + (" (here: no image would be left)" if len(scan.bad) == scan.checked else ""))
    logger.warning("%s\nDATASETS.SKIP_UNREADABLE: these images are left out",
                   unreadable_message(scan.bad, scan.checked, what, limit=len(scan.bad)))
    return {p for p, _ in scan.bad}


def _ext_dataset(cfg, items, is_train: bool, relabel: bool) -> ExtCommDataset:
    fields = tuple(cfg.INPUT.EXTRA_FIELDS)
    kp_tf = KeypointTransform(cfg, is_train) if {"keypoints", "heatmaps"} & set(fields) else None
    return ExtCommDataset(items, build_transforms(cfg, is_train=is_train), relabel=relabel,
                          extra_fields=fields, keypoint_transform=kp_tf,
                          heatmap_size=cfg.INPUT.HEATMAP.SIZE, sigma=cfg.INPUT.HEATMAP.SIGMA,
                          heatmap_source=cfg.INPUT.HEATMAP.SOURCE)


def build_train_set(cfg, names=None) -> ExtCommDataset:
    """Training set of ``names`` (default DATASETS.NAMES), relabelled, with extra fields."""
    items = []
    for name in names or cfg.DATASETS.NAMES:
        data = load_dataset(cfg, name, combineall=cfg.DATASETS.COMBINEALL)
        if comm.is_main_process():
            data.show_train()
        check_attribute_fields(cfg, data, name)
        items.extend(_with_keypoints(cfg, data, data.train, name))
    bad = _unreadable(cfg, items, f"the training set {'+'.join(names or cfg.DATASETS.NAMES)}")
    items = [it for it in items if it[0] not in bad]
    return _ext_dataset(cfg, items, is_train=True, relabel=True)


def build_test_set(cfg, name: str):
    """``(query + gallery dataset, num_query)`` for test dataset ``name``."""
    data = load_dataset(cfg, name)
    if comm.is_main_process():
        data.show_test()
    check_attribute_fields(cfg, data, name)
    items = _with_keypoints(cfg, data, data.query + data.gallery, name)
    bad = _unreadable(cfg, items, f"the test set {name} (query + gallery)")
    query = [it for it in items[:len(data.query)] if it[0] not in bad]
    items = query + [it for it in items[len(data.query):] if it[0] not in bad]
    if bad and (not query or len(items) == len(query)):
        raise ValueError(f"test set {name}: no {'query' if not query else 'gallery'} image is left once the "
                         "unreadable ones are left out (DATASETS.SKIP_UNREADABLE)")
    return _ext_dataset(cfg, items, is_train=False, relabel=False), len(query)


def build_train_loader(cfg, train_set=None):
    """FastReID's train loader (its samplers, batch size, workers) over our dataset."""
    return build_reid_train_loader(cfg, train_set=train_set or build_train_set(cfg))


def build_test_loader(cfg, name: str):
    """FastReID's test loader over our dataset; returns ``(loader, num_query)``."""
    test_set, num_query = build_test_set(cfg, name)
    return build_reid_test_loader(test_set=test_set, test_batch_size=cfg.TEST.IMS_PER_BATCH,
                                  num_query=num_query, num_workers=cfg.DATALOADER.NUM_WORKERS)


def _attribute_table(data):
    return getattr(data, "attributes", None)


def check_attribute_fields(cfg, data, name: str) -> None:
    """Raise when dataset ``name`` gives attributes whose fields or ORDER differ from
    ``MODEL.ATTRIBUTES.FIELDS`` (a model's heads would silently read the wrong columns)."""
    table = _attribute_table(data)
    fields = list(cfg.MODEL.ATTRIBUTES.FIELDS)
    if table is None or not fields or "attributes" not in cfg.INPUT.EXTRA_FIELDS:
        return
    if list(table.names) != fields:
        diff = sorted(set(table.names) ^ set(fields))
        what = f"fields {diff} differ" if diff else "the same fields are in another order"
        raise ValueError(f"dataset {name}: its attribute file {table.path} has the fields {list(table.names)}, but "
                         f"MODEL.ATTRIBUTES.FIELDS is {fields} ({what}). The batch's 'attributes' follow the file: set "
                         "MODEL.ATTRIBUTES.FIELDS to the file's order (or [] to take it from the training set)")


def attribute_fields(cfg) -> list[str]:
    """Attribute field names of the batch's ``attributes``: MODEL.ATTRIBUTES.FIELDS when set, else
    those of the first training dataset (then test dataset) that has an attribute file. Reads the
    datasets only when the key is empty; :func:`resolve_attribute_fields` stores the result."""
    if cfg.MODEL.ATTRIBUTES.FIELDS:
        return list(cfg.MODEL.ATTRIBUTES.FIELDS)
    for name in list(cfg.DATASETS.NAMES) + list(cfg.DATASETS.TESTS):
        try:
            table = _attribute_table(load_dataset(cfg, name))
        except FileNotFoundError:
            continue  # e.g. --eval-only on a machine without the training set
        if table is not None:
            return list(table.names)
    raise ValueError(f"no attribute fields: none of DATASETS.NAMES {list(cfg.DATASETS.NAMES)} / TESTS "
                     f"{list(cfg.DATASETS.TESTS)} has an attribute file; use an attribute dataset (e.g. "
                     "Market1501Attr, SyntheticMarket) or set MODEL.ATTRIBUTES.FIELDS")


def needs_attribute_fields(cfg) -> bool:
    """Whether the config's model or evaluation uses attribute fields."""
    return "attributes" in cfg.INPUT.EXTRA_FIELDS


def resolve_attribute_fields(cfg):
    """FastReID's ``auto_scale_hyperparams`` pattern for the attribute fields: a clone of ``cfg`` with
    ``MODEL.ATTRIBUTES.FIELDS`` filled in from the data when empty (and attributes are used), frozen as
    ``cfg`` was. Building a model or an evaluator afterwards reads the config only."""
    if not needs_attribute_fields(cfg) or cfg.MODEL.ATTRIBUTES.FIELDS:
        return cfg
    fields = attribute_fields(cfg)
    cfg = cfg.clone()
    frozen = cfg.is_frozen()
    cfg.defrost()
    cfg.MODEL.ATTRIBUTES.FIELDS = fields
    logger.info("MODEL.ATTRIBUTES.FIELDS resolved from the data: %s", fields)
    if frozen:
        cfg.freeze()
    return cfg
