"""Attribute recognition metrics printed beside FastReID's Rank-k / mAP.

:class:`AttrReidEvaluator` is FastReID's ``ReidEvaluator`` (re-id metrics unchanged) that also
collects the model's attribute probabilities (eval output ``{"features", "attributes": [per head
(B, K_h) probabilities]}``) and the batch's per-field labels, and reports:

* ``attr-<name>`` and ``attr-mean``: the official Market-1501 attribute protocol (Lin et al.,
  APR): 12 accuracies — gender, hair, age (4-way), up, down, clothes, hat, backpack, bag, handbag,
  upper colour (8-way), lower colour (9-way) — on the gallery images with pid > 0, identity labels
  expanded to every image. For other attribute sets (Duke, synthetic Duke) the same is done for
  every head of the colour-grouped schema. With one binary head per colour field (APR's 27 heads),
  the colour prediction is the colour whose "yes" probability is highest.
* with ``TEST.ATTR_FILTER.ENABLED``, APR's attribute-filtered retrieval
  (:mod:`fastreid_ext.evaluation.attr_filter`): ``filter-gallery%`` (gallery kept per query),
  ``filter-computed%`` (distances computed), ``filter-speedup`` (wall clock of the full faiss/BLAS
  search over the filtered one, same process), ``filter-Rank-1`` / ``filter-mAP`` and their losses.
  ``TEST.ATTR_FILTER.GROUP_COLOURS`` filters on colour-grouped heads instead of the model's own
  (:func:`grouped_probabilities`); ``TEST.ATTR_FILTER.PLAN`` picks the search plan ("exact": the
  distances computed are exactly the kept pairs). ``tools/attr_filter_sweep.py`` evaluates many
  thresholds from one inference pass.
* ``mA``, ``inst-acc``, ``inst-prec``, ``inst-rec``, ``inst-F1``: label-based mean accuracy and
  instance-based metrics over binary labels (threshold 0.5), as FastReID's attribute project
  reports them. Binary labels: each two-class head is one label (class 1 = "yes"); a K-class head
  (age, a colour group) contributes K one-vs-rest labels. Unlabelled entries (-1) are masked.
"""

from __future__ import annotations

import copy
import logging
from collections import OrderedDict

import numpy as np
import torch
from fastreid.evaluation import ReidEvaluator

from ..data.attributes import AttributeSchema
from .attr_filter import FilteredSearch, evaluate_filtered, full_search

logger = logging.getLogger(__name__)

#: the official Market-1501 protocol's 12 attributes, in its reporting order
MARKET_PROTOCOL = ("gender", "hair", "age", "up", "down", "clothes", "hat", "backpack", "bag",
                   "handbag", "upcolor", "downcolor")
EPS = 1e-12


def grouped_probabilities(schema: AttributeSchema, probs: list[np.ndarray]) -> list[np.ndarray]:
    """Class probabilities of every head of the colour-GROUPED schema of ``schema.fields``.

    ``probs``: the model's per-head probabilities in ``schema`` order (grouped or not). A colour
    group predicted by one binary head per colour (APR's 27 heads) becomes one distribution over
    the group: the binary heads are independent yes/no predictions, the annotation is one-hot, and
    conditioning the independent predictions on "exactly one colour is yes" gives
    ``P(k) = odds_k / sum_m odds_m`` with ``odds = P(yes) / P(no)`` (a softmax over the heads'
    log-odds). Its argmax is the colour with the highest "yes" probability.
    """
    grouped = AttributeSchema(schema.fields, group_colours=True)
    by_name = {h.name: np.asarray(p, np.float64) for h, p in zip(schema.heads, probs)}
    out = []
    for h in grouped.heads:
        if h.name in by_name:
            out.append(by_name[h.name].astype(np.float32))
            continue
        yes = np.stack([by_name[f][:, 1] for f in h.fields], 1)
        no = np.stack([by_name[f][:, 0] for f in h.fields], 1)
        logodds = np.log(np.maximum(yes, EPS)) - np.log(np.maximum(no, EPS))
        logodds -= logodds.max(1, keepdims=True)
        odds = np.exp(logodds)
        out.append((odds / odds.sum(1, keepdims=True)).astype(np.float32))
    return out


def grouped_predictions(schema: AttributeSchema, probs: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Class predictions for every head of the colour-GROUPED schema of ``schema.fields``."""
    grouped = AttributeSchema(schema.fields, group_colours=True)
    return {h.name: p.argmax(1) for h, p in zip(grouped.heads, grouped_probabilities(schema, probs))}


def binary_labels(schema: AttributeSchema, probs: list[np.ndarray], targets: np.ndarray):
    """(N, L) binary predictions (probability >= 0.5) and (N, L) labels in {0, 1, -1 masked}."""
    preds, labels = [], []
    for j, (h, p) in enumerate(zip(schema.heads, probs)):
        t = targets[:, j]
        if h.num_classes == 2:
            preds.append(p[:, 1] >= 0.5)
            labels.append(t)
        else:
            for k in range(h.num_classes):
                preds.append(p[:, k] >= 0.5)
                labels.append(np.where(t < 0, -1, (t == k).astype(np.int64)))
    return np.stack(preds, 1).astype(np.int64), np.stack(labels, 1)


def label_and_instance_metrics(pred: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """mA (mean over labels of (TPR + TNR) / 2) and instance accuracy/precision/recall/F1."""
    valid = label >= 0
    gt, pr = (label == 1) & valid, (pred == 1) & valid
    pos, neg = gt.sum(0), (valid & ~gt).sum(0)
    tp, tn = (gt & pr).sum(0), (valid & ~gt & ~pr).sum(0)
    defined = (pos > 0) | (neg > 0)
    ma_terms = np.where(pos > 0, tp / np.maximum(pos, 1), 0) + np.where(neg > 0, tn / np.maximum(neg, 1), 0)
    ma_terms = ma_terms / ((pos > 0).astype(float) + (neg > 0).astype(float) + EPS)
    inter, union = (gt & pr).sum(1), (gt | pr).sum(1)
    n_pred, n_gt = pr.sum(1), gt.sum(1)
    acc = np.mean(inter / np.maximum(union, 1))
    prec = np.mean(inter / np.maximum(n_pred, 1))
    rec = np.mean(inter / np.maximum(n_gt, 1))
    return {"mA": 100 * float(ma_terms[defined].mean()), "inst-acc": 100 * float(acc),
            "inst-prec": 100 * float(prec), "inst-rec": 100 * float(rec),
            "inst-F1": 100 * float(2 * prec * rec / max(prec + rec, EPS))}


class AttrReidEvaluator(ReidEvaluator):
    """FastReID's ReidEvaluator + attribute metrics (see module docstring).

    Args:
        schema: the model's attribute schema (heads in the order of its ``attributes`` output).
    """

    def __init__(self, cfg, num_query, schema: AttributeSchema, output_dir=None):
        super().__init__(cfg, num_query, output_dir)
        self.schema = schema
        self._attr = []

    def reset(self):
        super().reset()
        self._attr = []

    def process(self, inputs, outputs):
        super().process(inputs, outputs)
        if isinstance(outputs, dict) and outputs.get("attributes") is not None and "attributes" in inputs:
            self._attr.append({
                "probs": [p.detach().float().cpu() for p in outputs["attributes"]],
                "labels": inputs["attributes"].cpu(),
                "pids": inputs["targets"].cpu(),
            })

    def attribute_metrics(self, probs: list[np.ndarray], fields: np.ndarray) -> OrderedDict:
        """Metrics on the given images (the caller selects the gallery, pid > 0)."""
        res = OrderedDict()
        grouped = AttributeSchema(self.schema.fields, group_colours=True)
        gtargets = grouped.targets(torch.as_tensor(fields)).numpy()
        gpred = grouped_predictions(self.schema, probs)
        names = [n for n in MARKET_PROTOCOL if n in grouped.names]
        if len(names) < len(MARKET_PROTOCOL):  # not Market's attribute set: every grouped head
            names = grouped.names
        accs = []
        for n in names:
            t = gtargets[:, grouped.names.index(n)]
            m = t >= 0
            if m.any():
                accs.append(100 * float((gpred[n][m] == t[m]).mean()))
                res[f"attr-{n}"] = accs[-1]
        res["attr-mean"] = float(np.mean(accs)) if accs else float("nan")
        pred, label = binary_labels(self.schema, probs, self.schema.targets(torch.as_tensor(fields)).numpy())
        res.update(label_and_instance_metrics(pred, label))
        return res

    def evaluate(self):
        results = super().evaluate()
        if not self._attr:
            return results
        probs = [torch.cat([a["probs"][j] for a in self._attr]).numpy() for j in range(len(self.schema))]
        fields = torch.cat([a["labels"] for a in self._attr]).numpy()
        pids = torch.cat([a["pids"] for a in self._attr]).numpy()
        keep = np.arange(len(pids)) >= self._num_query  # the gallery ...
        keep &= pids > 0  # ... without distractors (official protocol)
        results.update(self.attribute_metrics([p[keep] for p in probs], fields[keep]))
        if self.cfg.TEST.ATTR_FILTER.ENABLED:
            results.update(self.filtered_retrieval(probs, pids))
        self._results = results
        return copy.deepcopy(results)

    def filtered_retrieval(self, probs: list[np.ndarray], pids: np.ndarray) -> OrderedDict:
        """Full vs attribute-filtered search on this test set (APR's acceleration)."""
        feats = torch.cat([p["feats"] for p in self._predictions]).numpy()
        camids = torch.cat([p["camids"] for p in self._predictions]).numpy()
        if self.cfg.TEST.ATTR_FILTER.GROUP_COLOURS:
            probs = grouped_probabilities(self.schema, probs)
        return filter_report(feats, probs, pids, camids, self._num_query, self.cfg.TEST.ATTR_FILTER.THRESHOLD,
                             self.cfg.TEST.METRIC, plan=self.cfg.TEST.ATTR_FILTER.PLAN)


def filter_report(feats, probs, pids, camids, num_query: int, threshold: float, metric: str = "cosine",
                  full=None, plan: str = "auto", extra_plans=()) -> OrderedDict:
    """Attribute-filtered vs full search of one test set (queries first): the columns printed by
    :class:`AttrReidEvaluator` (``filter-*``), searched with ``plan``. ``full``: a
    :func:`full_search` result to reuse. ``extra_plans``: further plans whose cost is reported as
    ``filter-computed%-<plan>`` / ``filter-speedup-<plan>``; every plan keeps exactly the same pairs,
    so the gallery is prepared and the result ranked once."""
    nq = num_query
    if full is None:
        full = full_search(feats[:nq], feats[nq:], metric=metric)
    search = FilteredSearch(threshold=threshold, metric=metric, plan=plan)
    search.fit(feats[nq:], [p[nq:] for p in probs])
    q_probs = [p[:nq] for p in probs]
    res = search.search(feats[:nq], None, q_probs, None)
    speedup = full.time_s / max(res.time_s, 1e-9)
    ev = evaluate_filtered(full.distmat, res.distmat, pids[:nq], pids[nq:], camids[:nq], camids[nq:])
    logger.info("attribute filter (threshold %.2f): %.1f%% of the gallery kept, %.1f%% of distances "
                "computed, %.2fx faster, Rank-1 %.2f -> %.2f", search.threshold,
                100 * res.gallery_fraction, 100 * res.computed_fraction, speedup,
                ev["full"]["rank1"], ev["filtered"]["rank1"])
    out = OrderedDict([
        ("filter-gallery%", 100 * res.gallery_fraction), ("filter-computed%", 100 * res.computed_fraction),
        ("filter-speedup", speedup),
        ("filter-Rank-1", ev["filtered"]["rank1"]), ("filter-mAP", ev["filtered"]["mAP"]),
        ("filter-Rank-1-loss", ev["rank1_loss"]), ("filter-mAP-loss", ev["mAP_loss"]),
    ])
    for other in extra_plans:  # the plan only changes how the kept pairs are searched (fit is shared)
        r = search.search(feats[:nq], None, q_probs, None, plan=other)
        out[f"filter-computed%-{other}"] = 100 * r.computed_fraction
        out[f"filter-speedup-{other}"] = full.time_s / max(r.time_s, 1e-9)
    return out
