"""FastReID datasets reading the embedded synthetic re-id sets (``tools/make_synthetic.py``).

``SyntheticMarket`` reads ``<root>/synthetic_market`` (Market-1501 layout and file names, 6 cameras)
and ``SyntheticDuke`` reads ``<root>/synthetic_duke`` (DukeMTMC-reID names, 8 cameras): the two
rendering styles are the two domains for domain adaptation. Every item carries its extras dict
(``attributes`` from ``attribute/*_attribute.mat``), so ``INPUT.EXTRA_FIELDS`` can put them in the
batch. Keypoints (``keypoints/person_keypoints_<split>.json``) are attached by the loaders like for
any other dataset (:mod:`fastreid_ext.data.dataset_keypoints`), only when a keypoint field is asked for.

The reader is shared with any dataset in these layouts (:class:`ReidFolderDataset`): it parses the
file names strictly (a bad name is an error naming the file), skips junk (pid -1) like FastReID,
keeps distractors (pid 0) in the gallery, and reports a missing folder with the command that
generates it.
"""

from __future__ import annotations

import glob
import os
import os.path as osp
import re

from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.data.datasets.bases import ImageDataset

from ..attributes import load_attribute_mat

MARKET_NAME = re.compile(r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")
DUKE_NAME = re.compile(r"^(-1|\d{4})_c(\d)_f(\d{7})\.jpg$")


class ReidFolderDataset(ImageDataset):
    """A re-id set in the Market-1501 / DukeMTMC-reID folder layout with optional extras.

    Subclasses set ``dataset_dir`` (folder under the root), ``dataset_name`` (prefix of training
    pids/camids, FastReID's convention), ``name_pattern``, ``num_cams``, ``attribute_file``
    (relative path or None) and ``generate_hint`` (how to create the folder).
    """

    dataset_dir = ""
    dataset_name = ""
    name_pattern = MARKET_NAME
    num_cams = 6
    attribute_file: str | None = None
    generate_hint = ""

    def __init__(self, root="datasets", **kwargs):
        self.root = root
        self.data_dir = osp.join(root, self.dataset_dir)
        if not osp.isdir(self.data_dir):
            raise FileNotFoundError(
                f"{type(self).__name__}: dataset folder '{self.data_dir}' not found (looked under "
                f"DATASETS.ROOT / $FASTREID_DATASETS = '{root}'). {self.generate_hint.format(dir=self.data_dir)}")
        self.train_dir = osp.join(self.data_dir, "bounding_box_train")
        self.query_dir = osp.join(self.data_dir, "query")
        self.gallery_dir = osp.join(self.data_dir, "bounding_box_test")
        self.check_before_run([self.train_dir, self.query_dir, self.gallery_dir])
        self.attributes = None
        if self.attribute_file:
            self.attributes = load_attribute_mat(osp.join(self.data_dir, self.attribute_file))

        train = lambda: self.process_dir(self.train_dir, "train", is_train=True)  # noqa: E731
        query = lambda: self.process_dir(self.query_dir, "test", is_train=False)  # noqa: E731
        gallery = lambda: self.process_dir(self.gallery_dir, "test", is_train=False)  # noqa: E731
        super().__init__(train, query, gallery, **kwargs)

    def process_dir(self, dir_path, split, is_train=True):
        """Items ``(path, pid, camid, extras)`` of one folder, sorted by file name."""
        records = []
        for path in sorted(glob.glob(osp.join(dir_path, "*.jpg"))):
            m = self.name_pattern.match(osp.basename(path))
            if m is None:
                raise ValueError(f"{type(self).__name__}: file name {path} does not follow the "
                                 f"dataset's naming pattern {self.name_pattern.pattern}")
            pid, camid = int(m.group(1)), int(m.group(2))
            if pid == -1:
                continue  # junk images are ignored, as FastReID does
            if not 1 <= camid <= self.num_cams:
                raise ValueError(f"{type(self).__name__}: {path}: camera {camid} outside 1..{self.num_cams}")
            records.append((path, pid, camid - 1))
        attributes = (self.attributes.per_image(split, [p for _, p, _ in records],
                                                f"{type(self).__name__} {osp.basename(dir_path)}")
                      if self.attributes is not None else [None] * len(records))
        data = []
        for (path, pid, camid), attr in zip(records, attributes):
            extras = {}
            if attr is not None:
                extras["attributes"] = attr
            if is_train:
                pid, camid = f"{self.dataset_name}_{pid}", f"{self.dataset_name}_{camid}"
            data.append((path, pid, camid, extras))
        return data


_HINT = ("Generate it with: python tools/make_synthetic.py --root {dir} --domain %s "
         "(or `make data`).")


@DATASET_REGISTRY.register()
class SyntheticMarket(ReidFolderDataset):
    """Synthetic pedestrians, Market-1501 style and layout (6 cameras); see ``fastreid_ext.data.synthetic``."""

    dataset_dir = "synthetic_market"
    dataset_name = "synthetic_market"
    name_pattern = MARKET_NAME
    num_cams = 6
    attribute_file = "attribute/market_attribute.mat"
    generate_hint = _HINT % "market"


@DATASET_REGISTRY.register()
class SyntheticDuke(ReidFolderDataset):
    """Synthetic pedestrians, DukeMTMC-reID style and layout (8 cameras): the second domain."""

    dataset_dir = "synthetic_duke"
    dataset_name = "synthetic_duke"
    name_pattern = DUKE_NAME
    num_cams = 8
    attribute_file = "attribute/duke_attribute.mat"
    generate_hint = _HINT % "duke"


def synthetic_dataset_dir(root: str, domain: str) -> str:
    """Folder a synthetic domain lives in under ``root``."""
    return os.path.join(root, {"market": SyntheticMarket, "duke": SyntheticDuke}[domain].dataset_dir)
