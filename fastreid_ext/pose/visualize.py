"""``--visualize N``: skeletons and heatmaps on N crops per split, so a user sees at a glance whether the
keypoints are right.

One PNG per split, ``<keypoint folder>/vis/pose_<split>.png``: N crops picked evenly over the split's
sorted images, two rows. Top: the crop with the skeleton **as written in the keypoint file** (what
training will use): joints with visibility 2 as dots, limbs between two visible joints as lines,
the person's left in blue, right in orange, the head in green; joints at visibility 0 (score below
the threshold, or outside the crop) as small grey crosses. Bottom: the model's own heatmaps (the
maximum over the 17 joints) resampled into the crop's frame
(:func:`fastreid_ext.data.stored_heatmaps.resample_to_crop`, the reader of ``--save-heatmaps``), over
the crop (:func:`fastreid_ext.visualization.overlay_heatmap`).
"""

from __future__ import annotations

import os
import os.path as osp

import numpy as np

from ..data.coco_keypoints import COCO_KEYPOINTS, COCO_SKELETON, read_coco_keypoints
from ..data.stored_heatmaps import resample_to_crop
from .base import PoseModel

__all__ = ["draw_split", "vis_path"]

_LEFT, _RIGHT, _HEAD = "#1f77b4", "#ff7f0e", "#2ca02c"


def _colour(name: str) -> str:
    return _LEFT if name.startswith("left") else _RIGHT if name.startswith("right") else _HEAD


def vis_path(keypoint_file: str, split: str) -> str:
    return osp.join(osp.dirname(keypoint_file), "vis", f"pose_{split}.png")


def draw_split(model: PoseModel, split, n: int) -> str:
    """Draw ``n`` crops of ``split`` (a :class:`fastreid_ext.pose.runner.Split` whose keypoint file is
    written); returns the PNG's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from PIL import Image

    from ..visualization import overlay_heatmap, save_figure

    kf = read_coco_keypoints(split.keypoint_file)
    unreadable = (kf.info.get("pose_tool") or {}).get("unreadable") or {}
    keys = [k for k in split.keys if k not in unreadable and k in kf.keypoints]
    if not keys or n <= 0:
        return ""
    pick = [keys[i] for i in sorted({int(round(j)) for j in np.linspace(0, len(keys) - 1, min(n, len(keys)))})]
    images = []
    for k in pick:
        with Image.open(split.path(k)) as im:
            images.append(np.asarray(im.convert("RGB")))
    prepared = [model.prepare(im) for im in images]
    out = model.predict(prepared, heatmaps=bool(all(model.heatmap_size)))

    fig, axes = plt.subplots(2, len(pick), figsize=(1.3 * len(pick) + 0.4, 5.2), squeeze=False)
    for j, (key, img) in enumerate(zip(pick, images)):
        kp = kf.keypoints[key]
        ax = axes[0, j]
        ax.imshow(img)
        for a, b in COCO_SKELETON:
            a, b = a - 1, b - 1
            if kp[a, 2] > 0 and kp[b, 2] > 0:
                ax.plot(kp[[a, b], 0], kp[[a, b], 1], "-", lw=1.4, color=_colour(COCO_KEYPOINTS[b]))
        for i, name in enumerate(COCO_KEYPOINTS):
            if kp[i, 2] > 0:
                ax.plot(kp[i, 0], kp[i, 1], "o", ms=2.5, color=_colour(name))
            elif 0 <= kp[i, 0] < img.shape[1] and 0 <= kp[i, 1] < img.shape[0]:
                ax.plot(kp[i, 0], kp[i, 1], "x", ms=3, color="0.6")
        score = kf.scores.get(key)
        ax.set_title(f"{osp.basename(key)[:14]}\nscore {float(np.mean(score)):.2f}" if score is not None
                     else osp.basename(key)[:14], fontsize=6)
        ax.axis("off")
        ax = axes[1, j]
        if out.heatmaps is not None:
            crop = resample_to_crop(out.heatmaps[j], out.affines[j], img.shape[:2], out_size=img.shape[:2])
            overlay_heatmap(ax, img, torch.from_numpy(crop.max(axis=0)), "heatmaps (max)", fontsize=6)
        else:
            ax.imshow(img)
        ax.axis("off")
    fig.suptitle(f"{split.name}: {model.describe()}", fontsize=7)
    path = vis_path(split.keypoint_file, split.name)
    os.makedirs(osp.dirname(path), exist_ok=True)
    save_figure(fig, path)
    return path
