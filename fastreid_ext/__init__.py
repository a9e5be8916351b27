"""fastreid-ext: AANet, APR (with attribute-filtered retrieval) and HA-CNN as plugins of FastReID 1.4.0,
with a loss registry, attribute evaluation, COCO-17 keypoint data for any dataset and a synthetic re-id
generator.

``import fastreid_ext`` is light: it imports neither torch nor FastReID, so torch-free tools (the
synthetic generator, the offline pose tool) can use the package. :func:`register` applies the
compatibility layer (:mod:`fastreid_ext.compat`) and registers every component into FastReID's
registries; :func:`get_ext_cfg` / :func:`add_ext_config` call it, and so does importing any
FastReID-dependent sub-package (``fastreid_ext.data.build``, ``.modeling``, ``.engine``, ...), which
applies the compatibility layer first.
"""

import importlib

__version__ = "0.1.0"
__all__ = ["add_ext_config", "get_ext_cfg", "register", "__version__"]

_REGISTERED = False
_SUBMODULES = ("compat", "config", "data", "engine", "evaluation", "modeling", "visualization")


def register() -> None:
    """Apply the FastReID compatibility patches and register every fastreid-ext dataset, model and
    evaluator into FastReID's registries. Idempotent (cheap after the first call)."""
    global _REGISTERED
    if _REGISTERED:
        return
    _REGISTERED = True  # set first: the modules imported below may call get_ext_cfg() -> register()
    try:
        from . import compat

        compat.apply()  # before any fastreid.data / fastreid.engine / fastreid.evaluation import
        for name in ("data.datasets", "modeling", "evaluation", "engine"):
            importlib.import_module(f"{__name__}.{name}")
    except BaseException:
        _REGISTERED = False
        raise


def __getattr__(name):  # PEP 562: the FastReID-dependent names load on first use
    if name in ("add_ext_config", "get_ext_cfg"):
        from . import config

        return getattr(config, name)
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
