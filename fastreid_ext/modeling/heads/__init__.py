"""Heads registered into FastReID's REID_HEADS_REGISTRY on import (``MODEL.HEADS.NAME``)."""
from .apr_head import ARM, APRHead

__all__ = ["APRHead", "ARM"]
