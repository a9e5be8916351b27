"""Meta-architectures registered into FastReID's META_ARCH_REGISTRY on import."""
from .hacnn import HACNN, HACNNReID, build_hacnn_backbone

__all__ = ["HACNN", "HACNNReID", "build_hacnn_backbone"]
