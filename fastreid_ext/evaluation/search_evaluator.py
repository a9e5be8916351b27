"""FastReID evaluator for person-search models (NPSM) and the random-box reference.

:class:`SearchEvaluator` is what ``ExtTrainer.build_evaluator`` returns for a person-search test set
(:mod:`fastreid_ext.data.search.loader`): FastReID's ``inference_on_dataset`` runs the model on each
batch of gallery frames, the evaluator keeps, for every (query, gallery frame) pair, the model's final
region (mapped back to the stored frame's pixels) and its score (cosine similarity with the query),
and reports what the benchmarks report (:mod:`fastreid_ext.evaluation.search_evaluation`): ``mAP``
(AP x recall rate), ``top-1/5/10``, and NPSM's ``localisation`` success (final region IoU >= 0.5 with
the ground truth, over the pairs whose frame shows the query's person). ``metric`` = mAP (FastReID's
best-model key). The per-query ranking (top 10: frame, box, score, match) goes to
``<output_dir>/search_results.json``.

:func:`random_box_search`: the same model's features on a **random proposal** of each gallery frame
instead of its searched region (localisation by chance, re-id unchanged): the reference NPSM's
search must beat. :func:`search_step_retention`: per shrinkage step, the share of pairs whose region still
holds the person (``tools/search_steps.py``).
"""

from __future__ import annotations

import itertools
import json
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from fastreid.evaluation.evaluator import DatasetEvaluator
from fastreid.utils import comm

from .search_evaluation import GalleryFrame, localisation_success, query_search_result, search_metrics

__all__ = ["SearchEvaluator", "person_box", "search_results", "random_box_search", "search_step_retention"]

#: one (query index, frame name, box x1y1x2y2 in stored-frame pixels, score)
Row = Tuple[int, str, np.ndarray, float]


def person_box(search_set, query, frame: str) -> Optional[np.ndarray]:
    """The ground-truth box (4,) of ``query``'s person in ``frame`` (stored pixels), or None if it is not there."""
    fr = search_set.frames[frame]
    gt = fr.boxes[fr.pids == query.pid]
    return gt[0] if len(gt) else None


def search_results(test_set, rows: Sequence[Row], topk=(1, 5, 10)) -> Tuple[Dict[str, float], List[dict]]:
    """(metrics, per-query rankings) of one box per (query, gallery frame) pair. Every pair of the
    protocol must be there once: a missing or repeated pair is an error (it would change the figures)."""
    s = test_set.s
    found = {}
    for qi, frame, box, score in rows:
        if (qi, frame) in found:
            raise ValueError(f"search results: query {qi} has two results for frame {frame}")
        found[(qi, frame)] = (np.asarray(box, dtype=np.float64).reshape(4), float(score))
    if len(found) != test_set.num_pairs:
        raise ValueError(f"search results: {len(found)} (query, frame) pairs, the protocol has {test_set.num_pairs}")
    per_query, final, gts, ranked = [], [], [], []
    for qi, (q, gallery) in enumerate(zip(s.queries, test_set.galleries)):
        frames = []
        for name in gallery:
            box, score = found[(qi, name)]
            gt = person_box(s, q, name)
            frames.append(GalleryFrame(box[None], np.array([score]), gt, name))
            if gt is not None:
                final.append(box)
                gts.append(gt)
        per_query.append(frames)
        r = query_search_result(frames, topk)
        if r is not None:
            ranked.append({"query": qi, "pid": int(q.pid), "frame": q.frame, "ap": r["ap"],
                           "top": [{"frame": frames[f].name, "box": [float(v) for v in frames[f].boxes[k]],
                                    "score": sc, "match": m} for f, k, sc, m in r["ranked"][:10]]})
    metrics = search_metrics(per_query, topk)
    metrics["localisation"] = localisation_success(np.array(final).reshape(-1, 4), np.array(gts).reshape(-1, 4))
    return metrics, ranked


class SearchEvaluator(DatasetEvaluator):
    """Person-search metrics from the model's final regions (module docstring)."""

    def __init__(self, cfg, test_set, output_dir=None):
        self.cfg = cfg
        self.test_set = test_set
        self._output_dir = output_dir
        self._rows: List[Row] = []

    def reset(self):
        self._rows = []

    def process(self, inputs, outputs):
        if not isinstance(outputs, dict) or "boxes" not in outputs or "scores" not in outputs:
            raise TypeError("SearchEvaluator needs a person-search model's outputs ('boxes', 'scores': NPSM's "
                            f"inference), got {type(outputs).__name__}")
        pairs = torch.as_tensor(inputs["pairs"]).reshape(-1, 2)
        scale = torch.as_tensor(inputs["scales"], dtype=torch.float64)[pairs[:, 1]]  # (sx, sy) per pair
        boxes = outputs["boxes"].detach().double().cpu() / scale.repeat(1, 2)
        scores = outputs["scores"].detach().double().cpu()
        for qi, frame, box, score in zip(inputs["pair_queries"].tolist(), inputs["pair_frames"], boxes.numpy(),
                                         scores.tolist()):
            self._rows.append((int(qi), frame, box, float(score)))

    def evaluate(self):
        rows = self._rows
        if comm.get_world_size() > 1:
            comm.synchronize()
            rows = list(itertools.chain(*comm.gather(self._rows, dst=0)))
            if not comm.is_main_process():
                return {}
        metrics, ranked = search_results(self.test_set, rows)
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            path = os.path.join(self._output_dir, "search_results.json")
            with open(path + ".tmp", "w") as f:
                json.dump({"metrics": metrics, "queries": ranked}, f, indent=1)
            os.replace(path + ".tmp", path)
        out = OrderedDict((k, float(metrics[k])) for k in ("mAP", "top-1", "top-5", "top-10", "localisation"))
        out["metric"] = out["mAP"]
        return out


@torch.no_grad()
def random_box_search(model, test_set, seed: int = 0, draws: int = 1, chunk: int = 512) -> Dict[str, float]:
    """Metrics of ``model`` (NPSM) when each pair's region is a random proposal of its frame instead of the
    searched one: the same re-id features, localisation by chance. The mean over ``draws`` independent draws
    (one generator seeded with ``seed``). A region's feature does not depend on the query, so every
    proposal's feature is computed once per frame (in chunks of ``chunk`` regions) and each draw only picks
    and scores: 5 draws cost about what 2 did pair by pair. A frame without proposals offers itself."""
    if draws < 1:
        raise ValueError(f"random_box_search: draws is {draws}; use >= 1")
    g = torch.Generator().manual_seed(seed)
    model.eval()
    evs = [SearchEvaluator(None, test_set) for _ in range(draws)]
    for ev in evs:
        ev.reset()
    for i in range(test_set.batches()):
        b = test_set.batch(i)
        maps = model.primitive_memory(model.preprocess_image(b))
        _, q_feat, _ = model._queries(b)
        h, w = b["images"].shape[-2:]
        cands = [p.to(torch.float32) if len(p) else torch.tensor([[0.0, 0.0, float(w), float(h)]])
                 for p in b["proposals"]]
        boxes = torch.cat(cands).to(model.device)
        index = torch.cat([torch.full((len(c),), j, dtype=torch.long) for j, c in enumerate(cands)]).to(model.device)
        feats = torch.cat([model.reid_feature(model.roi_pool(maps, index[k:k + chunk], boxes[k:k + chunk],
                                                             model.reid_pool)) for k in range(0, len(boxes), chunk)])
        feats = torch.nn.functional.normalize(feats, dim=1)
        q_feat = torch.nn.functional.normalize(q_feat, dim=1)
        first = torch.tensor([0] + [len(c) for c in cands]).cumsum(0)
        qi, fj = b["pairs"][:, 0].cpu(), b["pairs"][:, 1].cpu()
        counts = torch.tensor([len(c) for c in cands])[fj]
        for ev in evs:
            pick = first[fj] + (torch.rand(len(fj), generator=g) * counts).long().clamp_max(counts - 1)
            scores = (feats[pick.to(model.device)] * q_feat[qi.to(model.device)]).sum(1)
            ev.process(b, {"boxes": boxes[pick.to(model.device)], "scores": scores})
    results = [ev.evaluate() for ev in evs]
    return {k: float(np.mean([r[k] for r in results])) for k in results[0]}


@torch.no_grad()
def search_step_retention(model, test_set, tolerance: float = 0.1) -> Dict[str, object]:
    """Where NPSM's search loses the person (a diagnostic against the ground truth): over the (query, gallery
    frame showing the query's person) pairs, the share whose region after each step still holds the person
    (at most ``tolerance`` of its box outside), and the share whose final region has IoU >= 0.5 with it
    (the ``localisation`` of :class:`SearchEvaluator`). Returns ``{"pairs", "kept" (one % per step),
    "localised" (%)}``."""
    from ..modeling.layers.npsm import box_outside_fraction

    model.eval()
    s, kept, final, gts = test_set.s, [], [], []
    for i in range(test_set.batches()):
        b = test_set.batch(i)
        traj = model.inference(b)["trajectory"].double().cpu()
        scale = torch.as_tensor(b["scales"], dtype=torch.float64)[torch.as_tensor(b["pairs"])[:, 1]].repeat(1, 2)
        traj = traj / scale[:, None]  # stored-frame pixels, as SearchEvaluator maps them
        for j, (qi, name) in enumerate(zip(b["pair_queries"].tolist(), b["pair_frames"])):
            gt = person_box(s, s.queries[qi], name)
            if gt is None:
                continue
            kept.append((box_outside_fraction(traj[j, 1:], torch.as_tensor(gt)) <= tolerance).numpy())
            final.append(traj[j, -1].numpy())
            gts.append(gt)
    if not kept:
        raise ValueError("search_step_retention: no (query, frame showing the query's person) pair in the test set")
    return {"pairs": len(kept), "kept": (100 * np.mean(kept, axis=0)).tolist(),
            "localised": localisation_success(np.array(final), np.array(gts))}
