"""Meta-architectures registered into FastReID's META_ARCH_REGISTRY on import."""
from .aanet import AANet
from .apr import APR
from .hacnn import HACNNReID
from .mmt import MMT
from .npsm import NPSM
from .rbnet import RBNet

__all__ = ["AANet", "APR", "HACNNReID", "MMT", "NPSM", "RBNet"]
