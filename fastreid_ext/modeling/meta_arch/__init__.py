"""Meta-architectures registered into FastReID's META_ARCH_REGISTRY on import."""
from .aanet import AANet
from .apr import APR
from .hacnn import HACNNReID
from .rbnet import RBNet

__all__ = ["AANet", "APR", "HACNNReID", "RBNet"]
