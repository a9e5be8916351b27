"""PRW (Zheng et al., CVPR 2017, "Person Re-identification in the Wild") in its on-disk format.

Layout of the dataset folder (PRW-v16.04.20, and what :mod:`fastreid_ext.data.synthetic.scenes` writes)::

    frames/c1s1_000151.jpg           whole camera frames, named c<camera>s<sequence>_<frame>.jpg
    annotations/c1s1_000151.jpg.mat  the frame's people: N x 5 [id, x, y, w, h]; id -2 = unlabelled
                                     (variable ``box_new``; a few real files call it ``anno_file`` or
                                     ``anno_previous``, read the same way)
    frame_train.mat / frame_test.mat ``img_index_train`` / ``img_index_test``: the frames of each split,
                                     names without ``.jpg``
    query_info.txt                   one query per line: ``id x y w h frame`` (frame without ``.jpg``)
    ID_train.mat / ID_test.mat       identities of each split (optional; checked when present)
    query_box/                       query crops (optional, not needed: cut from the frames)

Boxes become (x1, y1, x2, y2). Some real annotations start at negative coordinates: the corners are
computed first and then clipped to 0 (the published readers, e.g. SeqNet's, clip x, y before adding
w, h, which widens such a box by the clipped amount). Every problem
(missing file, malformed annotation, a query whose frame is not a test frame, a query box that matches
no annotated box of its frame) is an error naming the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from .common import box_iou, load_mat, prw_camera

__all__ = ["UNLABELLED", "SceneFrame", "SearchQuery", "SearchSet", "read_prw", "write_prw_annotation"]

#: identity of a person nobody labelled (PRW's -2); such boxes are people, never a query's match
UNLABELLED = -2
_BOX_KEYS = ("box_new", "anno_file", "anno_previous")


@dataclass
class SceneFrame:
    """One whole frame: its file, camera, and the annotated people (boxes x1, y1, x2, y2; ids, -2 unlabelled)."""
    name: str
    path: str
    cam: int
    boxes: np.ndarray
    pids: np.ndarray


@dataclass
class SearchQuery:
    """A query: identity, the frame it was cut from, its box there (x1, y1, x2, y2), and its gallery
    (frame names; None = the protocol's default, e.g. PRW: every test frame but its own)."""
    pid: int
    frame: str
    box: np.ndarray
    gallery: Optional[List[str]] = None


@dataclass
class SearchSet:
    """A person-search dataset: every frame by name, the train / test frame names, the queries."""
    root: str
    frames: Dict[str, SceneFrame]
    train: List[str]
    test: List[str]
    queries: List[SearchQuery] = field(default_factory=list)

    def train_ids(self) -> List[int]:
        return sorted({int(p) for f in self.train for p in self.frames[f].pids if p >= 0})


def _loadmat(path: str) -> dict:
    return load_mat(path, "PRW")


def _names(mat: dict, key: str, path: str) -> List[str]:
    if key not in mat:
        raise ValueError(f"PRW: {path} has no variable {key!r} (has {sorted(k for k in mat if not k.startswith('__'))})")
    arr = np.asarray(mat[key]).reshape(-1)
    out = []
    for v in arr:
        v = np.asarray(v).reshape(-1)
        out.append(str(v[0]) if v.size else "")
    return [n[:-4] if n.endswith(".jpg") else n for n in out]


def _annotation(path: str) -> tuple:
    mat = _loadmat(path)
    key = next((k for k in _BOX_KEYS if k in mat), None)
    if key is None:
        raise ValueError(f"PRW: {path} has none of the variables {_BOX_KEYS}")
    a = np.asarray(mat[key], dtype=np.float64)
    if a.size == 0:
        return np.zeros((0, 4)), np.zeros(0, dtype=np.int64)
    if a.ndim != 2 or a.shape[1] != 5:
        raise ValueError(f"PRW: {path}: {key} must be N x 5 [id, x, y, w, h], got shape {a.shape}")
    ids = a[:, 0].astype(np.int64)
    if (a[:, 3:] <= 0).any():
        bad = int(np.nonzero((a[:, 3:] <= 0).any(1))[0][0])
        raise ValueError(f"PRW: {path}: box {bad} has width or height <= 0: {a[bad].tolist()}")
    boxes = np.concatenate([a[:, 1:3], a[:, 1:3] + a[:, 3:5]], axis=1)
    boxes = np.clip(boxes, 0, None)  # corners first, then clipped (see the module docstring)
    return boxes, ids


def read_prw(root: str) -> SearchSet:
    """The PRW dataset in ``root`` (see the module docstring)."""
    root = os.path.abspath(os.path.expanduser(root))
    for sub in ("frames", "annotations"):
        if not os.path.isdir(os.path.join(root, sub)):
            raise FileNotFoundError(f"PRW: {os.path.join(root, sub)} not found (expected frames/, annotations/, "
                                    "frame_train.mat, frame_test.mat, query_info.txt)")
    train = _names(_loadmat(os.path.join(root, "frame_train.mat")), "img_index_train",
                   os.path.join(root, "frame_train.mat"))
    test = _names(_loadmat(os.path.join(root, "frame_test.mat")), "img_index_test", os.path.join(root, "frame_test.mat"))
    both = set(train) & set(test)
    if both:
        raise ValueError(f"PRW: {len(both)} frames are in both frame_train.mat and frame_test.mat, e.g. {sorted(both)[0]}")
    frames = {}
    for name in train + test:
        path = os.path.join(root, "frames", name + ".jpg")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"PRW: frame {path} (listed in frame_{'train' if name in train else 'test'}.mat) not found")
        boxes, ids = _annotation(os.path.join(root, "annotations", name + ".jpg.mat"))
        frames[name] = SceneFrame(name=name, path=path, cam=prw_camera(name), boxes=boxes, pids=ids)
    queries = []
    qpath = os.path.join(root, "query_info.txt")
    if not os.path.isfile(qpath):
        raise FileNotFoundError(f"PRW: {qpath} not found")
    test_set = set(test)
    with open(qpath) as f:
        for ln, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise ValueError(f"PRW: {qpath}:{ln}: expected 'id x y w h frame', got {line.strip()!r}")
            pid, (x, y, w, h), frame = int(parts[0]), map(float, parts[1:5]), parts[5].replace(".jpg", "")
            if frame not in test_set:
                raise ValueError(f"PRW: {qpath}:{ln}: query frame {frame} is not a test frame (frame_test.mat)")
            box = np.array([max(x, 0.0), max(y, 0.0), x + w, y + h])
            fr = frames[frame]
            same = fr.boxes[fr.pids == pid]
            if not len(same) or box_iou(box, same).max() < 0.5:
                raise ValueError(f"PRW: {qpath}:{ln}: query box of id {pid} matches no box of that id in "
                                 f"annotations/{frame}.jpg.mat")
            queries.append(SearchQuery(pid=pid, frame=frame, box=box))
    for split, names in (("train", train), ("test", test)):
        p = os.path.join(root, f"ID_{split}.mat")
        if os.path.isfile(p):
            mat = _loadmat(p)
            key = next((k for k in mat if not k.startswith("__")), None)
            listed = {int(v) for v in np.asarray(mat[key]).reshape(-1)} if key else set()
            seen = {int(i) for n in names for i in frames[n].pids if i >= 0}
            if listed and not seen <= listed:
                raise ValueError(f"PRW: {p} lists {len(listed)} ids but the {split} frames show ids it lacks, e.g. "
                                 f"{sorted(seen - listed)[:3]}")
    return SearchSet(root=root, frames=frames, train=train, test=test, queries=queries)


def write_prw_annotation(path: str, boxes_xyxy: np.ndarray, pids: np.ndarray) -> None:
    """A PRW annotation file: ``box_new`` = N x 5 [id, x, y, w, h] (what the real files hold)."""
    import scipy.io

    b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    arr = np.concatenate([np.asarray(pids, dtype=np.float64).reshape(-1, 1), b[:, :2], b[:, 2:] - b[:, :2]], axis=1)
    scipy.io.savemat(path, {"box_new": arr})
