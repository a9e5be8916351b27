"""Meta-architectures registered into FastReID's META_ARCH_REGISTRY on import."""
from .apr import APR, ARM, APRHead
from .hacnn import HACNN, HACNNReID, build_hacnn_backbone

__all__ = ["APR", "APRHead", "ARM", "HACNN", "HACNNReID", "build_hacnn_backbone"]
