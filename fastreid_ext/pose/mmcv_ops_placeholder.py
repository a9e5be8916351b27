"""The one placeholder ``mmcv.ops`` that lets mmpose 1.3.2 run on ``mmcv-lite`` (no compiled mmcv).

Why it exists
-------------
mmpose's top-down HRNet needs nothing from mmcv's compiled operators, but ``import mmpose.models``
imports every head, and two modules of one unrelated head (the ED-Pose transformer head,
``heads/transformer_heads/edpose_head.py`` and ``transformers/deformable_detr_layers.py``) do an
unconditional ``from mmcv.ops import MultiScaleDeformableAttention``. ``mmcv-lite`` ships the Python
files of ``mmcv.ops`` without their C++/CUDA extension (``mmcv._ext``), so that import fails and
takes all of mmpose with it. Compiling full mmcv for torch 2.x is what we avoid.

What it is
----------
:func:`install` registers, before mmpose is imported, a module object as ``sys.modules["mmcv.ops"]``
(and as the attribute ``mmcv.ops``) that holds exactly one member, ``MultiScaleDeformableAttention``,
a class that **raises** :class:`MmcvOpsUnavailable` when anything builds it. Any other name is
absent: ``from mmcv.ops import DeformConv2d`` raises ``ImportError`` as before, so mmpose's and
mmengine's own ``try: from mmcv.ops import ... except ImportError`` fall-backs keep working
(DEKR head, PoseWarper neck, SyncBN conversion). Nothing is ever silently replaced by a no-op:
a model that really uses a compiled operator fails at build time with a message that says why.

When the real operators are importable (full ``mmcv`` with ``mmcv._ext``), :func:`install` does
nothing. It is idempotent and never replaces a ``mmcv.ops`` that is already imported.

mmcv's own ``mmcv/cnn/bricks/transformer.py`` tries ``mmcv.ops.multi_scale_deform_attn`` at import
and warns when it is missing; :func:`install` silences only that one warning (known, harmless here).
"""

from __future__ import annotations

import importlib.util
import sys
import types
import warnings

__all__ = ["MmcvOpsUnavailable", "MultiScaleDeformableAttention", "install", "installed"]

#: the module name the placeholder answers for
MODULE = "mmcv.ops"
#: marker attribute set on the placeholder module
_MARK = "__fastreid_ext_placeholder__"

_WHY = ("mmcv.ops is a placeholder from fastreid_ext.pose.mmcv_ops_placeholder: mmcv-lite has no compiled "
        "operators (mmcv._ext). fastreid-ext's pose tool only runs top-down heatmap models (HRNet), which do "
        "not use them; install full mmcv (built for your torch) to use {what}.")


class MmcvOpsUnavailable(ImportError):
    """Raised when code builds a compiled mmcv operator that the placeholder stands in for."""


class MultiScaleDeformableAttention:
    """Stands in for ``mmcv.ops.MultiScaleDeformableAttention`` (ED-Pose / Deformable DETR only):
    importing it works, building it raises :class:`MmcvOpsUnavailable`."""

    def __init__(self, *args, **kwargs):
        raise MmcvOpsUnavailable(_WHY.format(what="MultiScaleDeformableAttention (ED-Pose, Deformable DETR)"))


def _module_getattr(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    # AttributeError makes `from mmcv.ops import X` an ImportError: mmpose's try/except fall-backs see
    # "no full mmcv", exactly as without the placeholder
    raise AttributeError(f"module 'mmcv.ops' has no attribute '{name}' ({_WHY.format(what=name)})")


def _real_ops_available() -> bool:
    try:
        return importlib.util.find_spec("mmcv._ext") is not None
    except (ImportError, ValueError):  # mmcv itself missing
        return False


def installed() -> bool:
    """Whether ``mmcv.ops`` is currently this placeholder."""
    return getattr(sys.modules.get(MODULE), _MARK, False)


def install() -> bool:
    """Register the placeholder as ``mmcv.ops`` unless real operators exist or ``mmcv.ops`` is already
    imported. Returns True when the placeholder is (now) in place. Call before importing mmpose."""
    warnings.filterwarnings("ignore", message=r"Fail to import ``MultiScaleDeformableAttention``",
                            category=UserWarning)
    if installed():
        return True
    if MODULE in sys.modules or _real_ops_available():
        return False
    import mmcv  # ImportError here: mmcv(-lite) is not installed; the caller reports it

    ops = types.ModuleType(MODULE, __doc__)
    ops.__file__ = __file__
    ops.MultiScaleDeformableAttention = MultiScaleDeformableAttention
    ops.__all__ = ["MultiScaleDeformableAttention"]
    ops.__getattr__ = _module_getattr
    setattr(ops, _MARK, True)
    sys.modules[MODULE] = ops
    mmcv.ops = ops
    return True
