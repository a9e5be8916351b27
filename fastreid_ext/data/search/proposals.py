"""Person proposals for whole frames: selective search (Uijlings et al., IJCV 2013) from OpenCV's contrib
package, filtered to person-like boxes, computed offline and cached per frame (issue 12).

Why selective search: the issue asks for a real proposal method; EdgeBoxes (OpenCV contrib too) needs
a trained structured-edge model file that cannot be downloaded here, selective search needs nothing.
``cv2.ximgproc.segmentation`` in its "fast" mode (HSV + Lab colour spaces, two k values) gives a few
hundred to a few thousand boxes per frame.

Person filter (:func:`person_boxes`), a choice documented here: height/width between
``ASPECT = (1.2, 5.0)`` (PRW's and CUHK-SYSU's annotated people: ~1.5-4), height at least
``MIN_HEIGHT_FRACTION`` of the frame, then greedy non-maximum suppression at IoU 0.9 among the
survivors (selective search returns many near-duplicates), kept in selective search's order (its
hierarchical grouping order, which puts small regions first) and capped at ``max_boxes``.

:func:`compute_proposals` writes ``<cache>/<frame>.npy`` (K x 4, x1 y1 x2 y2, float32) atomically, frame by
frame, with a progress bar: an interrupted run resumes where it stopped; a cache made with other
settings (``settings.json``) is refused rather than mixed.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from .common import box_iou

__all__ = ["ASPECT", "MIN_HEIGHT_FRACTION", "selective_search", "person_boxes", "proposal_recall",
           "compute_proposals"]

ASPECT = (1.2, 5.0)
MIN_HEIGHT_FRACTION = 0.15


def selective_search(image_bgr: np.ndarray, mode: str = "fast") -> np.ndarray:
    """Selective-search boxes of an image (H, W, 3 uint8, BGR as cv2 reads it): (K, 4) x1 y1 x2 y2."""
    import cv2

    if not hasattr(cv2, "ximgproc"):
        raise ImportError("selective search needs OpenCV's contrib modules (cv2.ximgproc): install "
                          "opencv-contrib-python-headless (requirements.txt) instead of opencv-python-headless")
    if mode not in ("fast", "quality"):
        raise ValueError(f"selective search mode must be 'fast' or 'quality', got {mode!r}")
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(np.ascontiguousarray(image_bgr))
    (ss.switchToSelectiveSearchFast if mode == "fast" else ss.switchToSelectiveSearchQuality)()
    r = np.asarray(ss.process(), dtype=np.float64).reshape(-1, 4)  # x, y, w, h
    return np.concatenate([r[:, :2], r[:, :2] + r[:, 2:]], axis=1)


def _nms_keep_order(boxes: np.ndarray, iou: float) -> np.ndarray:
    keep = []
    for i in range(len(boxes)):
        if not keep or box_iou(boxes[i], boxes[keep]).max() < iou:
            keep.append(i)
    return np.array(keep, dtype=np.int64)


def person_boxes(boxes: np.ndarray, frame_hw: Tuple[int, int], aspect: Sequence[float] = ASPECT,
                 min_height_fraction: float = MIN_HEIGHT_FRACTION, nms_iou: float = 0.9,
                 max_boxes: Optional[int] = 300) -> np.ndarray:
    """The person-like boxes among ``boxes`` (see the module docstring)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    ok = (w > 0) & (h >= min_height_fraction * frame_hw[0])
    ok &= (h >= aspect[0] * w) & (h <= aspect[1] * w)
    b = b[ok]
    b = b[_nms_keep_order(b, nms_iou)] if len(b) else b
    return b[:max_boxes] if max_boxes else b


def proposal_recall(proposals: np.ndarray, gt_boxes: np.ndarray, iou: float = 0.5) -> Tuple[int, int]:
    """(ground-truth boxes covered by a proposal with IoU >= ``iou``, ground-truth boxes)."""
    gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    if not len(gt):
        return 0, 0
    p = np.asarray(proposals, dtype=np.float64).reshape(-1, 4)
    if not len(p):
        return 0, len(gt)
    return int((box_iou(gt, p).max(axis=1) >= iou).sum()), len(gt)


def compute_proposals(search_set, cache_dir: str, frames: Optional[Sequence[str]] = None, mode: str = "fast",
                      max_boxes: int = 300, progress: bool = True) -> Dict[str, np.ndarray]:
    """Person proposals of ``frames`` (default: every frame of the set), cached in ``cache_dir`` (see the
    module docstring). Returns frame name -> (K, 4) boxes."""
    import cv2

    settings = {"method": "selective_search", "mode": mode, "aspect": list(ASPECT),
                "min_height_fraction": MIN_HEIGHT_FRACTION, "nms_iou": 0.9, "max_boxes": int(max_boxes)}
    os.makedirs(cache_dir, exist_ok=True)
    spath = os.path.join(cache_dir, "settings.json")
    if os.path.isfile(spath):
        with open(spath) as f:
            old = json.load(f)
        if old != settings:
            raise ValueError(f"{cache_dir} holds proposals made with other settings ({old}); use another folder")
    else:
        with open(spath + ".tmp", "w") as f:
            json.dump(settings, f)
        os.replace(spath + ".tmp", spath)
    names = list(frames if frames is not None else search_set.frames)
    out = {}
    it = names
    if progress:
        from tqdm import tqdm

        it = tqdm(names, desc="proposals")
    for name in it:
        path = os.path.join(cache_dir, name.replace("/", "_") + ".npy")
        if os.path.isfile(path):
            out[name] = np.load(path)
            continue
        frame = search_set.frames[name]
        img = cv2.imread(frame.path, cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"{frame.path}: not a readable image")
        boxes = person_boxes(selective_search(img, mode), img.shape[:2], max_boxes=max_boxes).astype(np.float32)
        with open(path + ".tmp", "wb") as f:
            np.save(f, boxes)
        os.replace(path + ".tmp", path)
        out[name] = boxes
    return out
