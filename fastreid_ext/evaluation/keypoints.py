"""Keypoint and mask measures: heatmap peaks, PCK, and how much of a mask lies on the person.

* :func:`heatmap_peaks`: (B, K, h, w) heatmaps -> (B, K, 2) image pixels of each map's maximum, with
  mmpose's quarter-pixel refinement towards the higher neighbour, mapped from the heatmap grid to an
  image of ``image_size`` (H, W) (grid cell centres at ((j + 0.5) W / w - 0.5, (i + 0.5) H / h - 0.5):
  the convention of :func:`fastreid_ext.data.keypoints.render_heatmaps`).
* :func:`pck`: PCK@alpha: a labelled joint (visibility > 0) is correct when its prediction lies within
  ``alpha * ref`` pixels; ``ref`` is the person box's longer side. For re-id crops the box is the crop
  itself (a detector's person box), so the reference is the crop's height: 12.8 px at 128x64.
* :func:`mask_on_person`: the fraction of a non-negative mask's mass on the person's silhouette,
  ``sum(M S) / sum(M)``, and the same for a uniform mask (``mean(S)``: what a mask that ignores the
  person scores).
"""

from __future__ import annotations

import torch

__all__ = ["heatmap_peaks", "mask_on_person", "pck"]


def heatmap_peaks(heatmaps: torch.Tensor, image_size) -> torch.Tensor:
    """(B, K, 2) x, y in image pixels of each heatmap's maximum (quarter-pixel refined)."""
    B, K, h, w = heatmaps.shape
    H, W = image_size
    flat = heatmaps.reshape(B, K, -1)
    idx = flat.argmax(-1)
    ys, xs = (idx // w).float(), (idx % w).float()
    hm = heatmaps.reshape(B * K, h, w)
    iy, ix = (idx // w).reshape(-1), (idx % w).reshape(-1)
    n = torch.arange(B * K)
    # quarter-pixel shift towards the higher neighbour (mmpose's get_heatmap_maximum + refine)
    right = hm[n, iy, (ix + 1).clamp(max=w - 1)]
    left = hm[n, iy, (ix - 1).clamp(min=0)]
    down = hm[n, (iy + 1).clamp(max=h - 1), ix]
    up = hm[n, (iy - 1).clamp(min=0), ix]
    xs = xs + 0.25 * torch.sign(right - left).reshape(B, K) * ((ix > 0) & (ix < w - 1)).reshape(B, K)
    ys = ys + 0.25 * torch.sign(down - up).reshape(B, K) * ((iy > 0) & (iy < h - 1)).reshape(B, K)
    return torch.stack([(xs + 0.5) * (W / w) - 0.5, (ys + 0.5) * (H / h) - 0.5], dim=-1)


def pck(pred_xy: torch.Tensor, keypoints: torch.Tensor, ref, alpha: float = 0.1):
    """``(correct, labelled)`` joint counts of PCK@alpha.

    ``pred_xy`` (B, K, 2) and ``keypoints`` (B, K, 3) (x, y, visibility) in the same pixels; ``ref`` a
    number or (B,) tensor of reference lengths (the person box's longer side). Joints with visibility
    0 are not counted.
    """
    labelled = keypoints[..., 2] > 0
    ref = torch.as_tensor(ref, dtype=torch.float32).reshape(-1, 1) if not isinstance(ref, (int, float)) else ref
    dist = (pred_xy - keypoints[..., :2]).norm(dim=-1)
    correct = (dist <= alpha * ref) & labelled
    return int(correct.sum()), int(labelled.sum())


def mask_on_person(mask: torch.Tensor, silhouette: torch.Tensor):
    """``(on_person, uniform)`` for masks (B, 1, H, W) >= 0 and silhouettes (B, 1, H, W) in {0, 1}:
    the share of the mask's total mass on the silhouette, and the silhouette's share of the pixels."""
    m = mask.clamp(min=0).float()
    s = silhouette.float()
    total = m.sum()
    on = float((m * s).sum() / total) if total > 0 else float("nan")
    return on, float(s.mean())
