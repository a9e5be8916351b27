"""Unsupervised domain adaptation parts (issue 11: MMT with DBSCAN pseudo-labels).

Light on import (no torch, faiss or scikit-learn until a name is used):

- :mod:`.jaccard`: sparse k-reciprocal Jaccard distance, equal to FastReID's dense
  ``compute_jaccard_distance`` without any N x N matrix.
- :mod:`.pseudo_labels`: eps selection, DBSCAN on the sparse distances, per-epoch statistics,
  cluster centroids, and :class:`~.pseudo_labels.DBSCANPseudoLabeler` that a trainer hook calls.
- :mod:`.hooks`: MMT's trainer hooks (mean-teacher EMA, per-epoch pseudo-labels, pictures).
- :mod:`.trainer`: :class:`~.trainer.UDATrainer`, FastReID's trainer for MMT (``DATASETS.TARGETS``), and
  source pre-training. The model is :class:`fastreid_ext.modeling.meta_arch.mmt.MMT`.
"""

import importlib

_NAMES = {
    "jaccard_distance": "jaccard", "knn": "jaccard",
    "select_eps": "pseudo_labels", "dbscan_labels": "pseudo_labels", "generate_pseudo_labels": "pseudo_labels",
    "cluster_centroids": "pseudo_labels", "label_quality": "pseudo_labels", "distance_quantiles": "pseudo_labels",
    "format_stats": "pseudo_labels",
    "PseudoLabels": "pseudo_labels", "DBSCANPseudoLabeler": "pseudo_labels", "NoClustersError": "pseudo_labels",
    "MeanTeacherHook": "hooks", "PseudoLabelHook": "hooks", "UDATrainer": "trainer", "pretrain_sources": "trainer",
}
__all__ = sorted(_NAMES)


def __getattr__(name):  # PEP 562: load the heavy modules on first use
    if name in _NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
    if name in ("jaccard", "pseudo_labels", "hooks", "trainer"):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__) | {"jaccard", "pseudo_labels", "hooks", "trainer"})
