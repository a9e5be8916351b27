"""Models, in FastReID's layout: ``backbones/``, ``heads/``, ``losses/`` (the loss registry) and ``meta_arch/``.
Importing this registers every fastreid-ext backbone, head, loss and meta-architecture."""
from .. import compat  # FastReID compatibility patches before any fastreid import
compat.apply()
from . import backbones, heads, layers, losses, meta_arch  # noqa: F401,E402  (registration)
