"""Data: datasets, per-image extra fields (attributes, keypoints), loaders.

Light on import (no torch, no FastReID): the keypoint contract (:mod:`.coco_keypoints`), the
attribute files (:mod:`.attributes`) and the synthetic generator (:mod:`.synthetic`) are usable on
their own. The loader names below load :mod:`.build` / :mod:`.common` (FastReID, with the
compatibility layer applied first, and our datasets registered) on first use.
"""

import importlib

_LAZY = {
    "ExtCommDataset": "common",
    "attribute_fields": "build",
    "build_test_loader": "build",
    "build_test_set": "build",
    "build_train_loader": "build",
    "build_train_set": "build",
    "load_dataset": "build",
    "resolve_attribute_fields": "build",
}

__all__ = ["ExtCommDataset", "attribute_fields", "build_test_loader", "build_test_set", "build_train_loader",
           "build_train_set", "load_dataset", "resolve_attribute_fields"]


def __getattr__(name):  # PEP 562
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
