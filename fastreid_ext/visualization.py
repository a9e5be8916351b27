"""Drawing helpers shared by the picture tools (``tools/visualize_*.py``)."""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

__all__ = ["overlay_heatmap", "picture_tool_parser", "save_figure"]


def picture_tool_parser(description: str, output: str, num: int, what: str = "query images") -> argparse.ArgumentParser:
    """The picture tools' common command line: ``--config-file``, ``--output`` (folder), ``--num`` and
    trailing ``KEY VALUE`` config overrides (``MODEL.WEIGHTS ...``)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config-file", required=True)
    p.add_argument("--output", default=output, help="folder for the PNGs")
    p.add_argument("--num", type=int, default=num, help=f"number of {what} drawn")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p


def save_figure(fig, path: str, dpi: int = 110) -> None:
    """Write a matplotlib figure as laid out (tight) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def overlay_heatmap(ax, image, heatmap: torch.Tensor, title: str, fontsize: float = 7) -> None:
    """Draw ``image`` (H, W[, 3] array) on matplotlib axes ``ax`` with ``heatmap`` (h, w), resized
    bilinearly to the image, on top (jet colours, half transparent), under ``title``."""
    m = F.interpolate(heatmap[None, None].float(), size=tuple(image.shape[:2]), mode="bilinear",
                      align_corners=False)[0, 0]
    ax.imshow(image)
    ax.imshow(m.numpy(), cmap="jet", alpha=0.5)
    ax.set_title(title, fontsize=fontsize)
