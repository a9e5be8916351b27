#!/usr/bin/env python
"""Choose APR's attribute-filter threshold: one inference pass, every threshold evaluated.

    python tools/attr_filter_sweep.py --config-file configs/Synthetic/apr_R18.yml \
        --thresholds 0.5,0.6,0.7,0.8,0.9,0.95 MODEL.WEIGHTS logs/synthetic/apr_R18/model_final.pth

For each threshold: the gallery fraction the filter keeps (and its inverse, the reduction), the
distances actually computed and the measured speed-up of the filtered over the full search (same
process and backend; both sides time the query side only: the gallery is prepared once, outside
the timing, and the queries are normalised inside it on both sides) with each search plan
(``TEST.ATTR_FILTER.PLAN``: "exact" computes exactly the kept pairs, "auto" a superset when fewer,
larger products are faster), and Rank-1 / mAP with and without the filter (a gallery image the
filter dropped is never a hit, a dropped true match counts as missed; identical for both plans),
i.e. the ``filter-*`` columns of the evaluator, once per threshold and plan. Colours as in
``TEST.ATTR_FILTER.GROUP_COLOURS`` unless ``--colours`` says otherwise. Then, per attribute head,
at each threshold: the fraction of test images with a confident prediction and the accuracy of those
predictions, which is what decides the Rank-1 loss (a confident mistake on a query or on its true
match drops it). Speed-ups are single timings: on a test set this small they are noise-level.

The test set's features and probabilities are cached (``--cache``, default
``<OUTPUT_DIR>/filter_sweep_outputs.npz``) so that further sweeps skip inference; ``--no-cache``
recomputes. Writes a table and ``<OUTPUT_DIR>/filter_sweep.json`` (``--out``).
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastreid_ext  # noqa: E402

fastreid_ext.register()  # compat layer + registration, before any fastreid import
import numpy as np  # noqa: E402
from tabulate import tabulate  # noqa: E402

from fastreid_ext.data import build_test_loader  # noqa: E402
from fastreid_ext.engine import load_model  # noqa: E402
from fastreid_ext.modeling.common import attribute_schema  # noqa: E402
from fastreid_ext.engine.inference import collect  # noqa: E402
from fastreid_ext.evaluation.attr_evaluation import filter_report, grouped_probabilities  # noqa: E402
from fastreid_ext.evaluation.attr_filter import full_search  # noqa: E402


def cache_key(cfg) -> str:
    """What the cached outputs depend on: the weights file (path, size, mtime, so a retrained model
    in the same folder is not mistaken for the old one), the test set and the test input size."""
    w = cfg.MODEL.WEIGHTS
    st = os.stat(w) if w and os.path.exists(w) else None
    weights = f"{os.path.abspath(w)}:{st.st_size}:{st.st_mtime_ns}" if st else f"untrained:{w}"
    return (f"{weights}|{cfg.DATASETS.TESTS[0]}@{os.path.abspath(cfg.DATASETS.ROOT)}|"
            f"{list(cfg.INPUT.SIZE_TEST)}|{cfg.MODEL.META_ARCHITECTURE}")


def outputs(cfg, model, args):
    """The test set's outputs, from the cache when it is there and was made by the same weights
    on the same test set."""
    path = args.cache or os.path.join(cfg.OUTPUT_DIR, "filter_sweep_outputs.npz")
    key = cache_key(cfg)
    if os.path.exists(path) and not args.no_cache:
        z = np.load(path, allow_pickle=False)
        if "key" in z.files and str(z["key"]) == key:
            print(f"using cached outputs {path} (--no-cache to recompute)")
            nheads = int(z["num_heads"])
            return (z["features"], [z[f"probs{j}"] for j in range(nheads)], z["pids"], z["camids"],
                    z["labels"] if "labels" in z.files else None, int(z["num_query"]))
        print(f"cached outputs {path} are from other weights or another test set: recomputing")
    loader, nq = build_test_loader(cfg, cfg.DATASETS.TESTS[0])
    res = collect(model, loader)
    if "probs" not in res:
        raise SystemExit(f"{cfg.MODEL.META_ARCHITECTURE} predicts no attributes: the filter needs an "
                         "attribute model (APR, AANet)")
    feats = res["features"].numpy()
    extra = {"labels": res["labels"]} if "labels" in res else {}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, features=feats, pids=res["pids"], camids=res["camids"], num_query=nq,
             num_heads=len(res["probs"]), key=key,
             **{f"probs{j}": p for j, p in enumerate(res["probs"])}, **extra)
    os.replace(tmp, path)  # never a half-written cache
    return feats, res["probs"], res["pids"], res["camids"], res.get("labels"), nq


def thresholds(text: str) -> list[float]:
    """``"0.5,0.7"`` -> [0.5, 0.7] (comma-separated: the config overrides follow the options)."""
    try:
        vals = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--thresholds wants comma-separated numbers, got {text!r}") from None
    if not vals or not all(0.0 <= v <= 1.0 for v in vals):
        raise argparse.ArgumentTypeError(f"--thresholds wants probabilities in [0, 1], got {text!r}")
    return vals


def head_table(schema, probs, labels, thresholds):
    """Per head: confident fraction and accuracy of confident predictions at each threshold."""
    targets = schema.targets(labels).numpy()
    rows = []
    for j, h in enumerate(schema.heads):
        t, p = targets[:, j], probs[j]
        m = t >= 0
        row = {"head": h.name, "classes": h.num_classes, "acc": 100 * float((p[m].argmax(1) == t[m]).mean())}
        for thr in thresholds:
            conf = m & (p.max(1) >= thr)
            row[f"conf@{thr:g}"] = 100 * float(conf.sum() / max(m.sum(), 1))
            row[f"acc|conf@{thr:g}"] = 100 * float((p[conf].argmax(1) == t[conf]).mean()) if conf.any() else float("nan")
        rows.append(row)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config-file", required=True)
    p.add_argument("--thresholds", type=thresholds, default="0.5,0.6,0.7,0.8,0.9,0.95",
                   help="comma-separated confidence thresholds")
    p.add_argument("--colours", choices=("config", "model", "grouped"), default="config",
                   help="filter on the model's own heads (APR: binary per colour) or on colour-grouped heads "
                        "(default: TEST.ATTR_FILTER.GROUP_COLOURS)")
    p.add_argument("--cache", default="", help="npz of the test set's outputs")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--out", default="", help="JSON (default <OUTPUT_DIR>/filter_sweep.json)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)

    cfg, model = load_model(args.config_file, args.opts)
    feats, probs, pids, camids, labels, nq = outputs(cfg, model, args)
    schema = attribute_schema(cfg)
    if len(probs) != len(schema):
        raise SystemExit(f"the outputs have {len(probs)} attribute heads, the config's schema {len(schema)}: "
                         "wrong --cache for this config? (--no-cache)")
    grouped = args.colours == "grouped" or (args.colours == "config" and cfg.TEST.ATTR_FILTER.GROUP_COLOURS)
    if grouped:
        probs = grouped_probabilities(schema, probs)
        schema = schema.grouped()

    full = full_search(feats[:nq], feats[nq:], metric=cfg.TEST.METRIC)
    rows = []
    for thr in args.thresholds:
        e = filter_report(feats, probs, pids, camids, nq, thr, cfg.TEST.METRIC, full=full, plan="exact",
                          extra_plans=("auto",))
        rows.append({"threshold": thr, "gallery%": e["filter-gallery%"],
                     "reduction": 100.0 / max(e["filter-gallery%"], 1e-9),
                     "computed% exact": e["filter-computed%"], "speedup exact": e["filter-speedup"],
                     "computed% auto": e["filter-computed%-auto"], "speedup auto": e["filter-speedup-auto"],
                     "Rank-1": e["filter-Rank-1"], "Rank-1 loss": e["filter-Rank-1-loss"], "mAP": e["filter-mAP"],
                     "mAP loss": e["filter-mAP-loss"]})
    base = {"Rank-1": rows[0]["Rank-1"] + rows[0]["Rank-1 loss"], "mAP": rows[0]["mAP"] + rows[0]["mAP loss"]}
    print(f"\n{cfg.DATASETS.TESTS[0]}: {nq} queries x {len(pids) - nq} gallery, unfiltered Rank-1 "
          f"{base['Rank-1']:.2f} mAP {base['mAP']:.2f}; colours {'grouped' if grouped else 'as predicted'}")
    print(tabulate(rows, headers="keys", floatfmt=".2f", tablefmt="pipe"))
    heads = None
    if labels is not None:
        heads = head_table(schema, probs, labels, args.thresholds)
        print("\nper head (all test images with a label): confident % and accuracy of confident predictions")
        print(tabulate(heads, headers="keys", floatfmt=".1f", tablefmt="pipe"))
    out = args.out or os.path.join(cfg.OUTPUT_DIR, "filter_sweep.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"config": args.config_file, "weights": cfg.MODEL.WEIGHTS, "dataset": cfg.DATASETS.TESTS[0],
                   "num_query": nq, "num_gallery": len(pids) - nq, "colours": "grouped" if grouped
                   else "as predicted", "unfiltered": base, "thresholds": rows, "heads": heads}, f, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
