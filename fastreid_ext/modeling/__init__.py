"""Models: importing this registers every fastreid-ext backbone, head and meta-architecture."""
from . import meta_arch  # noqa: F401
