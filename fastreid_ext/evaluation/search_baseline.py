"""The two-step person-search baseline: boxes from a proposal method, then a re-id model on them
(issue 12's baseline, the comparison NPSM is measured against).

Every box of a gallery frame (selective-search person proposals, :mod:`fastreid_ext.data.search.proposals`;
or the annotated boxes, ``boxes="gt"``, which separates the re-id error from the detection error) is
cut from the frame, resized (bicubic) to the re-id model's ``INPUT.SIZE_TEST`` exactly like a test crop,
and described by the model's eval feature; the queries are their crops through the same model. The
boxes are then ranked by cosine similarity and scored with the benchmarks' protocol
(:func:`~fastreid_ext.evaluation.search_evaluation.evaluate_search`). Proposal methods give no person
score, so every proposal is a candidate and only the re-id similarity ranks them (a detector's score
would prune the boxes first: the baseline here is the weakest honest version of "detection + re-id").
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from .search_evaluation import evaluate_search

__all__ = ["crop_batch", "box_features", "run_search_baseline"]


def crop_batch(image: Image.Image, boxes: np.ndarray, size_hw: Tuple[int, int]) -> torch.Tensor:
    """(K, 3, H, W) float 0-255 crops of ``boxes`` (x1 y1 x2 y2) from an RGB image, bicubic-resized as
    FastReID's test transform resizes a crop."""
    h, w = size_hw
    out = []
    for b in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        x1, y1, x2, y2 = (int(round(v)) for v in b)
        crop = image.crop((x1, y1, max(x2, x1 + 1), max(y2, y1 + 1))).resize((w, h), Image.BICUBIC)
        out.append(torch.from_numpy(np.asarray(crop, dtype=np.float32)).permute(2, 0, 1))
    return torch.stack(out) if out else torch.zeros(0, 3, h, w)


@torch.no_grad()
def box_features(model, size_hw: Tuple[int, int], items: Sequence[Tuple[str, np.ndarray]], batch_size: int = 128,
                 desc: str = "box features") -> List[np.ndarray]:
    """The eval feature of every box: ``items`` = (image path, boxes (K, 4)); returns one (K, D) array per item."""
    feats = []
    for path, boxes in tqdm(items, desc=desc):
        crops = crop_batch(Image.open(path).convert("RGB"), boxes, size_hw)
        parts = [model({"images": crops[i:i + batch_size]}).float().cpu() for i in range(0, len(crops), batch_size)]
        feats.append(torch.cat(parts).numpy() if parts else np.zeros((0, 1), np.float32))
    return feats


def run_search_baseline(model, cfg, search_set, proposals: Dict[str, np.ndarray] | None = None,
                        multi_camera: bool = False) -> Dict[str, float]:
    """mAP / top-k of boxes (``proposals``: frame -> boxes; None = the annotated boxes) + ``model``'s
    features on ``search_set``'s test frames and queries."""
    size = tuple(int(v) for v in cfg.INPUT.SIZE_TEST)
    model.eval()
    frames = list(search_set.test)
    boxes = {n: (search_set.frames[n].boxes if proposals is None else np.asarray(proposals[n]).reshape(-1, 4))
             for n in frames}
    feats = box_features(model, size, [(search_set.frames[n].path, boxes[n]) for n in frames], desc="gallery boxes")
    detections = {n: (boxes[n], f) for n, f in zip(frames, feats)}
    qf = box_features(model, size, [(search_set.frames[q.frame].path, q.box[None]) for q in search_set.queries],
                      desc="queries")
    return evaluate_search(search_set, detections, [f[0] for f in qf], multi_camera=multi_camera)
