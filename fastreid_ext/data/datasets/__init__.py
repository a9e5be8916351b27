"""Datasets registered into FastReID's DATASET_REGISTRY on import."""
from ... import compat  # FastReID compatibility patches before any fastreid import

compat.apply()

from .attributes import DukeMTMCAttr, Market1501Attr  # noqa: E402
from .synthetic import ReidFolderDataset, SyntheticDuke, SyntheticMarket  # noqa: E402

__all__ = ["DukeMTMCAttr", "Market1501Attr", "ReidFolderDataset", "SyntheticDuke", "SyntheticMarket"]
from .search import CUHKSYSUSearch, PRWSearch, SyntheticScenes  # noqa: E402

__all__ += ["CUHKSYSUSearch", "PRWSearch", "SyntheticScenes"]
