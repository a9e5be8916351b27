"""Person-search datasets (whole frames) registered in FastReID's ``DATASET_REGISTRY`` (NPSM, issue 12).

Named in ``DATASETS.NAMES`` / ``DATASETS.TESTS`` like any dataset; ``ExtTrainer`` then builds the
person-search loaders and evaluator (:mod:`fastreid_ext.data.search.loader`,
:mod:`fastreid_ext.evaluation.search_evaluator`). Folders under ``DATASETS.ROOT``:

==================  ======================================  ==============================================
name                folder (first that exists)              format
==================  ======================================  ==============================================
SyntheticScenes     synthetic_scenes                        PRW's (``tools/make_scenes.py`` writes it)
PRWSearch           PRW-v16.04.20, PRW                      PRW (:mod:`fastreid_ext.data.search.prw`)
CUHKSYSUSearch      CUHK-SYSU, cuhk_sysu, cuhk-sysu         CUHK-SYSU (``DATASETS.SEARCH.GALLERY_SIZE``)
==================  ======================================  ==============================================

FastReID also registers ``CUHKSYSU``: its *crop* version for re-id training, a different thing.
"""

from __future__ import annotations

import os

from fastreid.data.datasets import DATASET_REGISTRY

from ..search import read_cuhk_sysu, read_prw

__all__ = ["SyntheticScenes", "PRWSearch", "CUHKSYSUSearch"]


class _SearchDataset:
    """A person-search dataset: ``search_set`` (frames, boxes, ids, queries), ``dataset_folder``."""

    folders = ()
    hint = ""
    #: marks a whole-frame dataset for the trainer's loader choice
    search = True

    def __init__(self, root: str = "datasets", gallery_size: int = 100, **kwargs):
        root = os.path.abspath(os.path.expanduser(root))
        tried = [os.path.join(root, f) for f in self.folders]
        folder = next((p for p in tried if os.path.isdir(p)), None)
        if folder is None:
            raise FileNotFoundError(f"{type(self).__name__}: none of {tried} exists (DATASETS.ROOT / "
                                    f"$FASTREID_DATASETS = '{root}'). {self.hint}")
        self.dataset_folder = folder
        self.search_set = self.read(folder, gallery_size)

    def read(self, folder: str, gallery_size: int):
        return read_prw(folder)


@DATASET_REGISTRY.register()
class SyntheticScenes(_SearchDataset):
    folders = ("synthetic_scenes",)
    hint = "Generate it: python tools/make_scenes.py --root <DATASETS.ROOT>/synthetic_scenes --proposals"


@DATASET_REGISTRY.register()
class PRWSearch(_SearchDataset):
    folders = ("PRW-v16.04.20", "PRW")
    hint = "PRW is not downloadable here: unpack PRW-v16.04.20 under the dataset root."


@DATASET_REGISTRY.register()
class CUHKSYSUSearch(_SearchDataset):
    folders = ("CUHK-SYSU", "cuhk_sysu", "cuhk-sysu")
    hint = "CUHK-SYSU is not downloadable here: unpack it (Image/SSM, annotation/) under the dataset root."

    def read(self, folder: str, gallery_size: int):
        return read_cuhk_sysu(folder, gallery_size)
