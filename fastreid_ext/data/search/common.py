"""Boxes and frame names shared by the person-search readers, the scene generator and the evaluation
(numpy only: no torch, no FastReID)."""

from __future__ import annotations

import os
import re

import numpy as np

__all__ = ["box_iou", "load_mat", "prw_camera"]


def load_mat(path: str, dataset: str) -> dict:
    """``scipy.io.loadmat(path)``; a missing or unreadable file is an error naming ``dataset`` and the file."""
    import scipy.io

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{dataset}: {path} not found")
    try:
        return scipy.io.loadmat(path)
    except Exception as e:  # noqa: BLE001 - any parse failure: the file is not a MAT file
        raise ValueError(f"{dataset}: {path} is not a readable MATLAB file ({type(e).__name__}: {e})") from e


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4), (x1, y1, x2, y2): (N, M)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


_PRW_FRAME = re.compile(r"^c(\d+)s(\d+)_(\d+)")


def prw_camera(frame: str) -> int:
    """Camera of a PRW frame name (``c3s2_012345.jpg`` -> 3)."""
    m = _PRW_FRAME.match(frame.rsplit("/", 1)[-1])
    if not m:
        raise ValueError(f"{frame!r} is not a PRW frame name (c<camera>s<sequence>_<frame>.jpg)")
    return int(m.group(1))
