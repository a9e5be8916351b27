"""Market-1501 and DukeMTMC-reID with their identity-level attribute annotations (APR, AANet).

``Market1501Attr`` / ``DukeMTMCAttr`` are FastReID's own ``Market1501`` / ``DukeMTMC`` readers
(same folders, same file-name parsing, same ``<dataset_name>_<pid>`` prefixing of training ids)
whose items carry a fourth element, the extras dict ``{"attributes": int64 (F,)}``: the attributes
of the image's identity from the official annotation file of Lin et al. (Pattern Recognition 2019),
encoded as class indices (file value - 1; -1 = unlabelled), in the file's field order
(:class:`fastreid_ext.data.attributes.AttributeTable`).

* ``bounding_box_train`` ids read the file's ``train`` split, ``query`` / ``bounding_box_test``
  ids its ``test`` split. Market distractors (pid 0000) get all -1 (no attributes); Duke's
  distractor identities are in the file's test split and get their labels.
* Attribute file: the ``attribute_file=`` argument (``DATASETS.ATTRIBUTE_FILE`` through
  :func:`fastreid_ext.data.build.load_dataset`), else ``<dataset folder>/market_attribute.mat`` or
  ``<dataset folder>/duke_attribute.mat``. A missing file is a ``FileNotFoundError`` that says where
  it looked; an identity of the images without an entry in the file is a ``ValueError`` naming it
  (:meth:`AttributeTable.require`).
* ``DATASETS.COMBINEALL`` keeps the extras (FastReID's ``combine_all`` only handles 3-tuples).
"""

from __future__ import annotations

import copy
import os.path as osp

from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.data.datasets.dukemtmcreid import DukeMTMC
from fastreid.data.datasets.market1501 import Market1501

from ..attributes import AttributeTable, load_attribute_mat

__all__ = ["AttributeDatasetMixin", "DukeMTMCAttr", "Market1501Attr"]


def _raw_pid(pid) -> int:
    """The file-name pid of an item (training pids are prefixed ``<dataset_name>_<pid>``)."""
    return int(str(pid).rsplit("_", 1)[-1])


class AttributeDatasetMixin:
    """Attaches identity-level attributes to the items of a FastReID folder reader.

    The host class must set ``self.<folder_attr>`` (the dataset folder) before it calls
    ``process_dir(dir_path, is_train)``. Subclasses set ``default_attribute_file`` (file name in that
    folder), ``struct_name`` (MATLAB struct the file must hold) and ``folder_attr``.
    """

    default_attribute_file = ""
    struct_name = ""
    folder_attr = "data_dir"

    def attribute_path(self) -> str:
        """The attribute file this dataset reads."""
        return self._attribute_file or osp.join(getattr(self, self.folder_attr), self.default_attribute_file)

    def attribute_table(self) -> AttributeTable:
        """The annotation table, read on first use (the dataset folder is known by then)."""
        if self.attributes is None:
            path = self.attribute_path()
            if not osp.isfile(path):
                where = ("DATASETS.ATTRIBUTE_FILE / attribute_file=" if self._attribute_file else
                         f"the default location <dataset folder>/{self.default_attribute_file}")
                raise FileNotFoundError(
                    f"{type(self).__name__}: attribute file not found: {path} (looked at {where}). "
                    f"Put {self.default_attribute_file} there or set DATASETS.ATTRIBUTE_FILE to its path.")
            table = load_attribute_mat(path)
            if table.struct_name != self.struct_name:
                raise ValueError(f"{type(self).__name__}: attribute file {path} holds '{table.struct_name}', "
                                 f"expected '{self.struct_name}' (wrong dataset's file?)")
            self.attributes = table
        return self.attributes

    def __init__(self, root="datasets", attribute_file=None, **kwargs):
        self._attribute_file = attribute_file or None
        self.attributes: AttributeTable | None = None
        super().__init__(root=root, **kwargs)
        # FastReID reads query/gallery lazily: read them now, so that identities missing from the
        # attribute file are reported when the dataset is built, not when the first evaluation starts
        self.query, self.gallery  # noqa: B018
        self.attribute_table()

    def process_dir(self, dir_path, is_train=True):
        """The host reader's items, sorted, as ``(path, pid, camid, {"attributes": ...})``."""
        data = sorted(super().process_dir(dir_path, is_train=is_train))
        attrs = self.attribute_table().per_image("train" if is_train else "test",
                                                 [_raw_pid(it[1]) for it in data],
                                                 f"{type(self).__name__} {osp.basename(dir_path)}")
        return [(path, pid, camid, {"attributes": a}) for (path, pid, camid), a in zip(data, attrs)]

    def combine_all(self):
        """FastReID's ``combine_all`` (query + gallery ids join training, junk ids dropped) with extras."""
        combined = copy.deepcopy(self.train)
        for img_path, pid, camid, extras in list(self.query) + list(self.gallery):
            if pid in self._junk_pids:
                continue
            combined.append((img_path, f"{self.dataset_name}_test_{pid}", f"{self.dataset_name}_test_{camid}",
                             extras))
        self._train = combined


@DATASET_REGISTRY.register()
class Market1501Attr(AttributeDatasetMixin, Market1501):
    """FastReID's ``Market1501`` with the 27 Market-1501 attributes (751 train / 750 test ids).

    Args:
        root: DATASETS.ROOT (FastReID's rule: ``<root>/Market-1501-v15.09.15`` if it exists, else
            ``<root>`` itself holds the folders).
        attribute_file: path of ``market_attribute.mat``; ``None`` / ``""`` = ``<dataset folder>/
            market_attribute.mat``.
    """

    default_attribute_file = "market_attribute.mat"
    struct_name = "market_attribute"
    folder_attr = "data_dir"


@DATASET_REGISTRY.register()
class DukeMTMCAttr(AttributeDatasetMixin, DukeMTMC):
    """FastReID's ``DukeMTMC`` with the 23 DukeMTMC-reID attributes (702 train / 1110 test ids,
    distractors included).

    Args:
        root: DATASETS.ROOT (holds ``DukeMTMC-reID/``).
        attribute_file: path of ``duke_attribute.mat``; ``None`` / ``""`` = ``<root>/DukeMTMC-reID/
            duke_attribute.mat``.
    """

    default_attribute_file = "duke_attribute.mat"
    struct_name = "duke_attribute"
    folder_attr = "dataset_dir"
