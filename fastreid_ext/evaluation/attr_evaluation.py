"""Attribute recognition metrics printed beside FastReID's Rank-k / mAP.

:class:`AttrReidEvaluator` is FastReID's ``ReidEvaluator`` (re-id metrics unchanged) that also
collects the model's attribute probabilities (eval output ``{"features", "attributes": [per head
(B, K_h) probabilities]}``) and the batch's per-field labels, and reports:

* ``attr-<name>``, ``attr-mean`` and ``attr-images``: the official Market-1501 attribute protocol
  (Lin et al., APR; the dataset authors' script ``evaluate_market_attribute.m`` in
  vana77/Market-1501_Attribute): 12 accuracies — gender, hair, age (4-way), up, down, clothes, hat,
  backpack, bag, handbag, upper colour (8-way), lower colour (9-way) — on the gallery images with
  pid > 0, identity labels expanded to every image, and their mean. As in that script, EVERY such
  image counts for every attribute (its denominator is all 13,115 images, ``attr-images``), and a
  colour prediction k is correct iff the identity's field of colour k is "yes" (value 2 in the
  file, class 1 here): with several "yes" colours any of them is correct, with none every
  prediction is wrong. (The official file has such identities: among the 750 test ids, 69 have no
  "yes" upper colour and 44 no "yes" lower colour, none several; they used to be silently left out
  of the colour accuracies.) Beyond the official file: an unlabelled entry (-1, e.g. Duke's
  ``top``; a colour group counts as unlabelled when one of its fields is) is left out of that
  attribute's accuracy. Other attribute sets (Duke, synthetic Duke): the same for every head of the
  colour-grouped schema. With one binary head per colour field (APR's 27 heads), the colour
  prediction is the colour whose "yes" probability is highest. Printed results stay one column
  per accuracy plus ``attr-images``; the images each accuracy counts, and how many of them have a
  colour annotation that is not one-hot, are logged as a small table (:func:`market_protocol`).
* with ``TEST.ATTR_FILTER.ENABLED``, APR's attribute-filtered retrieval
  (:mod:`fastreid_ext.evaluation.attr_filter`): ``filter-gallery%`` (gallery kept per query),
  ``filter-computed%`` (distances computed), ``filter-speedup`` (query-time wall clock of the full
  faiss/BLAS search over the filtered one, same process; neither side times the gallery's
  preparation), ``filter-Rank-1`` / ``filter-mAP`` (a gallery image the filter dropped is never a
  hit; a dropped true match counts as missed) and their losses.
  ``TEST.ATTR_FILTER.GROUP_COLOURS`` filters on colour-grouped heads instead of the model's own
  (:func:`grouped_probabilities`); ``TEST.ATTR_FILTER.PLAN`` picks the search plan ("exact": the
  distances computed are exactly the kept pairs). ``tools/attr_filter_sweep.py`` evaluates many
  thresholds from one inference pass.
* ``mA``, ``inst-acc``, ``inst-prec``, ``inst-rec``, ``inst-F1``: label-based mean accuracy and
  instance-based metrics over binary labels (threshold 0.5), as FastReID's attribute project
  reports them (``projects/FastAttr/fastattr/attr_evaluation.py``). Binary labels: each two-class
  head is one label (class 1 = "yes"); a K-class head (age) contributes K one-vs-rest labels; a
  colour group contributes one label per colour FIELD (its own yes/no annotation, so identities
  whose colours are not one-hot are evaluated too). Unlabelled entries (-1) are masked. mA follows
  FastAttr for degenerate labels: ``(TP / (P + eps) + TN / (N + eps)) / 2`` averaged over ALL
  labels, so a label without positives in the test set contributes ``TN / N / 2`` (and one without
  negatives ``TP / P / 2``); labels without any labelled entry are left out. How many labels are
  degenerate is logged.

Multi-process evaluation (``--num-gpus > 1``): like FastReID's ``ReidEvaluator.evaluate`` for
the features, the attribute predictions, labels and pids (and, for the filter, the features) are
gathered to rank 0 (``fastreid.utils.comm.gather``); the other processes return ``{}``.
"""

from __future__ import annotations

import copy
import itertools
import logging
from collections import OrderedDict

import numpy as np
import torch
from fastreid.utils import comm

from ..data.attributes import AttributeSchema
from .reid_evaluation import ExtReidEvaluator
from .attr_filter import FilteredSearch, evaluate_filtered, full_search

logger = logging.getLogger(__name__)

#: the official Market-1501 protocol's 12 attributes, in its reporting order
MARKET_PROTOCOL = ("gender", "hair", "age", "up", "down", "clothes", "hat", "backpack", "bag",
                   "handbag", "upcolor", "downcolor")
EPS = 1e-12
#: FastAttr's eps in ``correct_pos / (real_pos + eps)`` (projects/FastAttr/fastattr/attr_evaluation.py)
FASTATTR_EPS = 1e-20


def grouped_probabilities(schema: AttributeSchema, probs: list[np.ndarray]) -> list[np.ndarray]:
    """Class probabilities of every head of the colour-GROUPED schema of ``schema.fields``.

    ``probs``: the model's per-head probabilities in ``schema`` order (grouped or not). A colour
    group predicted by one binary head per colour (APR's 27 heads) becomes one distribution over
    the group: the binary heads are independent yes/no predictions, the annotation is one-hot, and
    conditioning the independent predictions on "exactly one colour is yes" gives
    ``P(k) = odds_k / sum_m odds_m`` with ``odds = P(yes) / P(no)`` (a softmax over the heads'
    log-odds). Its argmax is the colour with the highest "yes" probability.
    """
    grouped = schema.grouped()
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
    grouped = schema.grouped()
    return {h.name: p.argmax(1) for h, p in zip(grouped.heads, grouped_probabilities(schema, probs))}


def binary_labels(schema: AttributeSchema, probs: list[np.ndarray], fields: np.ndarray):
    """(N, L) binary predictions (probability >= 0.5) and (N, L) labels in {0, 1, -1 masked}.

    ``fields``: (N, F) per-field labels (encoded: class index, -1 unlabelled) of ``schema.fields``.
    A two-class head is one label; a K-class head K one-vs-rest labels, except a colour group,
    whose k-th label is its k-th colour field itself (so an identity with zero or several "yes"
    colours is still evaluated, colour by colour)."""
    fields = np.asarray(fields)
    index = {f: i for i, f in enumerate(schema.fields)}
    targets = schema.targets(torch.as_tensor(fields)).numpy()
    preds, labels = [], []
    for j, (h, p) in enumerate(zip(schema.heads, probs)):
        p = np.asarray(p)
        t = targets[:, j]
        if h.is_group:
            for k, f in enumerate(h.fields):
                preds.append(p[:, k] >= 0.5)
                labels.append(fields[:, index[f]])
        elif h.num_classes == 2:
            preds.append(p[:, 1] >= 0.5)
            labels.append(t)
        else:
            for k in range(h.num_classes):
                preds.append(p[:, k] >= 0.5)
                labels.append(np.where(t < 0, -1, (t == k).astype(np.int64)))
    return np.stack(preds, 1).astype(np.int64), np.stack(labels, 1).astype(np.int64)


def label_and_instance_metrics(pred: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """mA and instance accuracy / precision / recall / F1 (percent), as FastReID's FastAttr.

    FastAttr (``projects/FastAttr/fastattr/attr_evaluation.py``, ``get_attr_metrics``):
    ``term1 = correct_pos / (real_pos + eps)``, ``term2 = correct_neg / (real_neg + eps)``,
    ``mA = mean((term1 + term2) / 2)`` over ALL labels, eps = 1e-20: a label without positives
    contributes ``TN / N / 2``, one without negatives ``TP / P / 2``. Here unlabelled entries (-1)
    are masked out of P, N, TP, TN and of the instance metrics (FastAttr has none), and a label
    with no labelled entry at all is left out of the mean (nothing to evaluate). Instance metrics:
    per image ``|gt & pred| / |gt | pred|``, ``/ |pred|``, ``/ |gt|`` (0 when the denominator is
    empty, as FastAttr's eps gives), averaged; F1 = 2 P R / (P + R). Degenerate labels are logged.
    """
    valid = label >= 0
    gt, pr = (label == 1) & valid, (pred == 1) & valid
    pos, neg = gt.sum(0), (valid & ~gt).sum(0)
    tp, tn = (gt & pr).sum(0), (valid & ~gt & ~pr).sum(0)
    labelled = valid.any(0)
    ma_terms = (tp / (pos + FASTATTR_EPS) + tn / (neg + FASTATTR_EPS)) / 2
    no_pos, no_neg = labelled & (pos == 0), labelled & (neg == 0)
    if no_pos.any() or no_neg.any() or not labelled.all():
        logger.info("mA: %d of %d labels degenerate in this test set (%d without positives, %d without "
                    "negatives; FastAttr's convention: they score half their other recall); %d label(s) "
                    "without any labelled entry left out", int((no_pos | no_neg).sum()), int(labelled.sum()),
                    int(no_pos.sum()), int(no_neg.sum()), int((~labelled).sum()))
    inter, union = (gt & pr).sum(1), (gt | pr).sum(1)
    n_pred, n_gt = pr.sum(1), gt.sum(1)
    acc = np.mean(inter / np.maximum(union, 1))
    prec = np.mean(inter / np.maximum(n_pred, 1))
    rec = np.mean(inter / np.maximum(n_gt, 1))
    ma = float(ma_terms[labelled].mean()) if labelled.any() else float("nan")
    return {"mA": 100 * ma, "inst-acc": 100 * float(acc),
            "inst-prec": 100 * float(prec), "inst-rec": 100 * float(rec),
            "inst-F1": 100 * float(2 * prec * rec / max(prec + rec, EPS))}


def market_protocol(schema: AttributeSchema, probs: list[np.ndarray], fields: np.ndarray) -> list[dict]:
    """Per attribute of the official protocol (Market's 12, else every colour-grouped head): one
    row ``{"attribute", "accuracy" (percent, NaN if nothing counted), "images" (counted),
    "non-one-hot" (counted images whose colour group has zero or several "yes")}``.

    Follows ``evaluate_market_attribute.m`` (vana77/Market-1501_Attribute): every given image
    counts; a colour prediction k is correct iff colour field k is "yes" (class 1). Unlabelled
    entries (-1; a colour group with any unlabelled field) are not counted (not in the official
    file). ``fields``: (N, F) per-field labels of ``schema.fields`` of the images to evaluate."""
    fields = np.asarray(fields)
    grouped = schema.grouped()
    gpred = grouped_predictions(schema, probs)
    index = {f: i for i, f in enumerate(schema.fields)}
    names = [n for n in MARKET_PROTOCOL if n in grouped.names]
    if len(names) < len(MARKET_PROTOCOL):  # not Market's attribute set: every grouped head
        names = grouped.names
    rows = []
    for n in names:
        h = grouped.heads[grouped.names.index(n)]
        sub = fields[:, [index[f] for f in h.fields]]
        counted = (sub >= 0).all(1)
        if h.is_group:
            correct = sub[np.arange(len(sub)), gpred[n]] == 1
            odd = int((counted & ((sub == 1).sum(1) != 1)).sum())
        else:
            correct = gpred[n] == sub[:, 0]
            odd = 0
        acc = 100 * float(correct[counted].mean()) if counted.any() else float("nan")
        rows.append({"attribute": n, "accuracy": acc, "images": int(counted.sum()), "non-one-hot": odd})
    return rows


class AttrReidEvaluator(ExtReidEvaluator):
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
        """Metrics on the given images (the caller selects the gallery, pid > 0): ``attr-<name>``,
        ``attr-mean``, ``attr-images`` (:func:`market_protocol`; its per-attribute counts are
        logged as a table, not added to the results) and mA / instance metrics."""
        from tabulate import tabulate

        res = OrderedDict()
        rows = market_protocol(self.schema, probs, fields)
        for r in rows:
            if r["images"]:
                res[f"attr-{r['attribute']}"] = r["accuracy"]
        accs = [r["accuracy"] for r in rows if r["images"]]
        res["attr-mean"] = float(np.mean(accs)) if accs else float("nan")
        res["attr-images"] = int(len(fields))
        logger.info("attribute accuracies (official Market protocol, evaluate_market_attribute.m: every "
                    "gallery image with pid > 0, any 'yes' colour correct; unlabelled entries not counted) "
                    "on %d images:\n%s", len(fields),
                    tabulate([[r["attribute"], r["accuracy"], r["images"], r["non-one-hot"]] for r in rows],
                             headers=["attribute", "accuracy %", "images counted", "of which non-one-hot"],
                             tablefmt="pipe", floatfmt=".2f"))
        pred, label = binary_labels(self.schema, probs, fields)
        res.update(label_and_instance_metrics(pred, label))
        return res

    def evaluate(self):
        results = super().evaluate()  # gathers the features to rank 0 (others get {})
        attr, predictions = self._attr, self._predictions
        if comm.get_world_size() > 1:  # as ReidEvaluator.evaluate: every process joins the gathers
            comm.synchronize()
            attr = list(itertools.chain(*comm.gather(self._attr, dst=0)))
            if self.cfg.TEST.ATTR_FILTER.ENABLED:
                predictions = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        if not attr:
            return results
        probs = [torch.cat([a["probs"][j] for a in attr]).numpy() for j in range(len(self.schema))]
        fields = torch.cat([a["labels"] for a in attr]).numpy()
        pids = torch.cat([a["pids"] for a in attr]).numpy()
        keep = np.arange(len(pids)) >= self._num_query  # the gallery ...
        keep &= pids > 0  # ... without distractors (official protocol)
        results.update(self.attribute_metrics([p[keep] for p in probs], fields[keep]))
        if self.cfg.TEST.ATTR_FILTER.ENABLED:
            results.update(self.filtered_retrieval(probs, pids, predictions))
        self._results = results
        return copy.deepcopy(results)

    def filtered_retrieval(self, probs: list[np.ndarray], pids: np.ndarray, predictions=None) -> OrderedDict:
        """Full vs attribute-filtered search on this test set (APR's acceleration). ``predictions``:
        the (gathered) feature records, default this process's ``_predictions``."""
        predictions = self._predictions if predictions is None else predictions
        feats = torch.cat([p["feats"] for p in predictions]).numpy()
        camids = torch.cat([p["camids"] for p in predictions]).numpy()
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
    so the gallery is prepared and the result ranked once.

    Speed-up = full search time / filtered search time, both the query side only (query
    normalisation included, gallery preparation — ``FullSearch.fit`` / :meth:`FilteredSearch.fit`
    — excluded on both sides). Rank-1 / mAP: :func:`evaluate_filtered` with the filter's kept mask
    (a dropped gallery image is never a hit)."""
    nq = num_query
    if full is None:
        full = full_search(feats[:nq], feats[nq:], metric=metric)
    search = FilteredSearch(threshold=threshold, metric=metric, plan=plan)
    search.fit(feats[nq:], [p[nq:] for p in probs])
    q_probs = [p[:nq] for p in probs]
    res = search.search(feats[:nq], None, q_probs, None)
    speedup = full.time_s / max(res.time_s, 1e-9)
    ev = evaluate_filtered(full.distmat, res.distmat, pids[:nq], pids[nq:], camids[:nq], camids[nq:],
                           kept=res.kept)
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
