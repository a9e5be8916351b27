"""Drawing helpers shared by the picture tools (``tools/visualize_*.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["overlay_heatmap"]


def overlay_heatmap(ax, image, heatmap: torch.Tensor, title: str, fontsize: float = 7) -> None:
    """Draw ``image`` (H, W[, 3] array) on matplotlib axes ``ax`` with ``heatmap`` (h, w), resized
    bilinearly to the image, on top (jet colours, half transparent), under ``title``."""
    m = F.interpolate(heatmap[None, None].float(), size=tuple(image.shape[:2]), mode="bilinear",
                      align_corners=False)[0, 0]
    ax.imshow(image)
    ax.imshow(m.numpy(), cmap="jet", alpha=0.5)
    ax.set_title(title, fontsize=fontsize)
