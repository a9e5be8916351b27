"""Person-search evaluation as CUHK-SYSU and PRW define it (issue 12's evaluation half).

Person search starts from a query crop and whole gallery frames. For one query, every box a method
finds in the query's gallery frames gets a score (its similarity to the query); all boxes of all those
frames are ranked together. A box is a **match** when it lies on a frame that shows the query's
identity and has IoU >= 0.5 with that identity's ground-truth box; in each such frame at most one box
counts, the highest-scored of the boxes that overlap enough (the others are false positives, as in
the benchmarks' official code: CUHK-SYSU's ``search_performance_calc`` in Xiao et al.'s OIM release,
kept by every later person-search codebase).

* **AP** of a query = the average precision of its ranked boxes (scikit-learn's step-wise
  ``average_precision_score``: sum over ranks of precision x recall increment, no interpolation)
  **times the recall rate** = frames where the identity was found / frames that show it, so a person
  the detector missed in some frames costs AP even though no ranked box is wrong. mAP = mean over
  queries. **top-k** = the fraction of queries with a match among their k best boxes.
* Galleries: CUHK-SYSU gives each query its own list of frames (``TestG50.mat`` .. ``TestG4000.mat``:
  gallery sizes 50-4000, :func:`cuhk_sysu_gallery`); PRW searches every test frame but the query's
  own, and its **multi-camera** protocol only frames of other cameras (:func:`prw_gallery`).
* **Localisation success** (NPSM): the fraction of (query, frame showing the query) pairs whose final
  region has IoU >= 0.5 with the ground truth (:func:`localisation_success`).

Boxes are (x1, y1, x2, y2) in pixels throughout; the readers convert the datasets' (x, y, w, h).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from ..data.search.common import box_iou, prw_camera

__all__ = ["GalleryFrame", "box_iou", "average_precision", "query_search_result", "search_metrics",
           "localisation_success", "prw_camera", "prw_gallery", "cuhk_sysu_gallery", "query_frames", "evaluate_search"]

#: IoU a found box needs with the ground truth to count (both benchmarks)
IOU_THRESHOLD = 0.5


def average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Step-wise average precision (scikit-learn's ``average_precision_score``): boxes sorted by score,
    tied scores taken together; sum of precision at each distinct score times the recall it adds.
    0 when there is no positive."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_score = np.asarray(y_score, dtype=np.float64)
    n_pos = y_true.sum()
    if n_pos == 0:
        return 0.0
    order = np.argsort(-y_score, kind="mergesort")
    y_true, y_score = y_true[order], y_score[order]
    last = np.r_[np.nonzero(np.diff(y_score))[0], len(y_score) - 1]  # end of each group of tied scores
    tp = np.cumsum(y_true)[last]
    precision = tp / (last + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


@dataclass
class GalleryFrame:
    """One gallery frame of one query: the boxes a method found there, their scores (similarity to
    the query, higher = more alike) and the query identity's ground-truth box (None: not in the frame)."""
    boxes: np.ndarray
    scores: np.ndarray
    gt_box: Optional[np.ndarray] = None
    name: str = ""


def query_search_result(frames: Sequence[GalleryFrame], topk: Sequence[int] = (1, 5, 10),
                        iou_threshold: float = IOU_THRESHOLD) -> Optional[Dict[str, object]]:
    """AP (times the recall rate), top-k hits and the ranked list of one query; None when no gallery
    frame shows the query's identity (such a query is not evaluated)."""
    y_true, y_score, where = [], [], []
    count_gt = count_tp = 0
    for fi, f in enumerate(frames):
        boxes = np.asarray(f.boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(f.scores, dtype=np.float64).reshape(-1)
        if len(boxes) != len(scores):
            raise ValueError(f"gallery frame {f.name or fi}: {len(boxes)} boxes but {len(scores)} scores")
        labels = np.zeros(len(boxes))
        if f.gt_box is not None:
            count_gt += 1
            if len(boxes):
                ious = box_iou(boxes, f.gt_box)[:, 0]
                cand = np.nonzero(ious >= iou_threshold)[0]
                if len(cand):
                    labels[cand[np.argmax(scores[cand])]] = 1
                    count_tp += 1
        y_true.append(labels)
        y_score.append(scores)
        where.extend((fi, k) for k in range(len(boxes)))
    if count_gt == 0:
        return None
    y_true = np.concatenate(y_true) if y_true else np.zeros(0)
    y_score = np.concatenate(y_score) if y_score else np.zeros(0)
    recall_rate = count_tp / count_gt
    ap = average_precision(y_true, y_score) * recall_rate if count_tp else 0.0
    order = np.argsort(-y_score, kind="mergesort")
    hits = {k: bool(y_true[order[:k]].any()) for k in topk}
    return {"ap": ap, "recall_rate": recall_rate, "hits": hits, "gt_frames": count_gt, "found_frames": count_tp,
            "ranked": [(where[i][0], where[i][1], float(y_score[i]), bool(y_true[i])) for i in order]}


def search_metrics(queries: Iterable[Sequence[GalleryFrame]], topk: Sequence[int] = (1, 5, 10),
                   iou_threshold: float = IOU_THRESHOLD) -> Dict[str, float]:
    """Person-search ``mAP`` and ``top-k`` (percent) over queries, each given as its gallery frames;
    ``queries`` (evaluated) and ``skipped`` (no gallery frame shows the identity) are counted too."""
    aps, hits = [], {k: [] for k in topk}
    skipped = 0
    for frames in queries:
        r = query_search_result(frames, topk, iou_threshold)
        if r is None:
            skipped += 1
            continue
        aps.append(r["ap"])
        for k in topk:
            hits[k].append(r["hits"][k])
    if not aps:
        raise ValueError("no query has its identity in any of its gallery frames: nothing to evaluate")
    out = {"mAP": 100.0 * float(np.mean(aps))}
    out.update({f"top-{k}": 100.0 * float(np.mean(v)) for k, v in hits.items()})
    out.update({"queries": len(aps), "skipped": skipped})
    return out


def localisation_success(final_boxes: np.ndarray, gt_boxes: np.ndarray,
                         iou_threshold: float = IOU_THRESHOLD) -> float:
    """Percent of (query, frame showing it) pairs whose final region (row i of ``final_boxes``) has
    IoU >= ``iou_threshold`` with the ground-truth box (row i of ``gt_boxes``)."""
    final_boxes = np.asarray(final_boxes, dtype=np.float64).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    if len(final_boxes) != len(gt_boxes):
        raise ValueError(f"{len(final_boxes)} final regions but {len(gt_boxes)} ground-truth boxes")
    if not len(gt_boxes):
        return 0.0
    ious = np.diag(box_iou(final_boxes, gt_boxes))
    return 100.0 * float(np.mean(ious >= iou_threshold))


def prw_gallery(query_frame: str, test_frames: Sequence[str], multi_camera: bool = False) -> List[str]:
    """PRW's gallery of a query: every test frame but the query's own; ``multi_camera``: only frames
    of other cameras than the query's."""
    if multi_camera:
        cam = prw_camera(query_frame)
        return [f for f in test_frames if f != query_frame and prw_camera(f) != cam]
    return [f for f in test_frames if f != query_frame]


def cuhk_sysu_gallery(query_gallery: Sequence[str], query_frame: str) -> List[str]:
    """CUHK-SYSU's gallery of a query: its own list from TestG<N>.mat (N = 50 .. 4000), the query's own
    frame never included (the official lists do not contain it; refused rather than silently dropped)."""
    if query_frame in query_gallery:
        raise ValueError(f"the gallery of the query in {query_frame} contains the query's own frame")
    return list(query_gallery)


def query_frames(search_set, query, detections, query_feature: np.ndarray, multi_camera: bool = False
                 ) -> List[GalleryFrame]:
    """The :class:`GalleryFrame` list of one query of a :class:`~fastreid_ext.data.search.SearchSet`:
    its gallery (``query.gallery`` when the protocol lists one, CUHK-SYSU; else PRW's rule), each frame's
    found boxes scored by cosine similarity of their features with ``query_feature``, and the query
    identity's ground-truth box there. ``detections``: frame name -> (boxes (K, 4) x1y1x2y2, features (K, D))."""
    if query.gallery is not None:
        gallery = cuhk_sysu_gallery(query.gallery, query.frame)
    else:
        gallery = prw_gallery(query.frame, search_set.test, multi_camera=multi_camera)
    q = np.asarray(query_feature, dtype=np.float64).reshape(-1)
    q = q / max(np.linalg.norm(q), 1e-12)
    out = []
    for name in gallery:
        fr = search_set.frames[name]
        gt = fr.boxes[fr.pids == query.pid]
        boxes, feats = detections.get(name, (np.zeros((0, 4)), np.zeros((0, len(q)))))
        feats = np.asarray(feats, dtype=np.float64).reshape(len(boxes), -1)
        if len(boxes):
            feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
        out.append(GalleryFrame(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), feats @ q if len(boxes) else np.zeros(0),
                                gt[0] if len(gt) else None, name))
    return out


def evaluate_search(search_set, detections, query_features: Sequence[np.ndarray], multi_camera: bool = False,
                    topk: Sequence[int] = (1, 5, 10)) -> Dict[str, float]:
    """Person-search mAP / top-k of a method on a :class:`~fastreid_ext.data.search.SearchSet`: ``detections``
    maps each test frame to its found boxes and their features, ``query_features[i]`` is the feature of
    query ``i`` (its crop). PRW: ``multi_camera`` = the multi-camera protocol."""
    if len(query_features) != len(search_set.queries):
        raise ValueError(f"{len(query_features)} query features for {len(search_set.queries)} queries")
    return search_metrics((query_frames(search_set, q, detections, f, multi_camera)
                           for q, f in zip(search_set.queries, query_features)), topk)
