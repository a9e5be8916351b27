#!/usr/bin/env python
"""Pictures of a trained model's test results: one PNG per query.

    python tools/visualize_results.py --config-file configs/Synthetic/apr_R18.yml \
        --output vis/apr --num 20 MODEL.WEIGHTS logs/synthetic/apr_R18/model_final.pth

Each PNG shows the query, then its top-k gallery images (default 10) ranked by the model's test
distance, framed green (same identity) or red (different identity); gallery images of the query's
identity from the query's camera are skipped, as in the Market-1501 protocol. For models that predict
attributes (APR, AANet) the query's predicted attributes (those with probability >= 0.5 for a
"yes", the argmax class otherwise) are printed under it, with ground-truth mismatches marked "!";
for models that return an attribute attention map (AANet) a second panel overlays it on the query.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastreid_ext  # noqa: E402

fastreid_ext.register()  # compat layer + registration, before any fastreid import
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm import tqdm  # noqa: E402

from fastreid_ext.data import build_test_loader  # noqa: E402
from fastreid_ext.data.common import read_image  # noqa: E402
from fastreid_ext.engine import load_model  # noqa: E402
from fastreid_ext.modeling.common import attribute_schema  # noqa: E402
from fastreid_ext.engine.inference import collect  # noqa: E402
from fastreid_ext.visualization import overlay_heatmap, picture_tool_parser, save_figure  # noqa: E402


def ranked_lists(q_feat, g_feat, q_pids, g_pids, q_cams, g_cams, topk, metric="cosine"):
    """Top-k gallery indices per query, skipping same-identity same-camera images (protocol)."""
    if metric == "cosine":
        q_feat, g_feat = F.normalize(q_feat, dim=1), F.normalize(g_feat, dim=1)
        dist = 1 - q_feat @ g_feat.t()
    else:
        dist = torch.cdist(q_feat, g_feat)
    order = torch.argsort(dist, dim=1).numpy()
    out = []
    for i, row in enumerate(order):
        junk = (g_pids[row] == q_pids[i]) & (g_cams[row] == q_cams[i])
        out.append(row[~junk][:topk])
    return out


def attribute_text(schema, probs_row, labels_row=None):
    """Short lines of predicted attributes; '!' marks a disagreement with the label."""
    parts = []
    targets = schema.targets(torch.as_tensor(labels_row)[None])[0].numpy() if labels_row is not None else None
    for j, (h, p) in enumerate(zip(schema.heads, probs_row)):
        c = int(np.argmax(p))
        if h.num_classes == 2:
            if c == 0:
                if targets is not None and targets[j] == 1:
                    parts.append(f"!no-{h.name}")
                continue
            text = h.name
        else:
            text = f"{h.name}={h.fields[c] if h.is_group else c}"
        if targets is not None and targets[j] >= 0 and targets[j] != c:
            text = "!" + text
        parts.append(text)
    lines, line = [], ""
    for t in parts:
        if len(line) + len(t) > 22:
            lines.append(line)
            line = ""
        line += (" " if line else "") + t
    return "\n".join(lines + [line])


def draw(path, query_path, gallery_paths, correct, text=None, attention=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(gallery_paths) + 1 + (attention is not None)
    fig, axes = plt.subplots(1, n, figsize=(1.1 * n, 3.2 if text else 2.6))
    q = np.asarray(read_image(query_path))
    axes[0].imshow(q)
    axes[0].set_title("query", fontsize=7)
    if text:
        axes[0].text(0, q.shape[0] + 4, text, fontsize=4.5, va="top", family="monospace")
    k = 1
    if attention is not None:
        overlay_heatmap(axes[1], q, attention, "AAM")
        k = 2
    for r, (g, ok) in enumerate(zip(gallery_paths, correct)):
        ax = axes[k + r]
        ax.imshow(np.asarray(read_image(g)))
        for side in ax.spines.values():
            side.set_edgecolor("#1a9850" if ok else "#d73027")
            side.set_linewidth(3)
        ax.set_title(f"{r + 1}", fontsize=7, color="#1a9850" if ok else "#d73027")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    save_figure(fig, path)


def main(argv=None):
    p = picture_tool_parser(__doc__.splitlines()[0], "vis/results", 20, "queries")
    p.add_argument("--topk", type=int, default=10)
    args = p.parse_args(argv)

    cfg, model = load_model(args.config_file, args.opts)
    loader, nq = build_test_loader(cfg, cfg.DATASETS.TESTS[0])
    res = collect(model, loader)
    schema = None
    if "probs" in res:
        schema = attribute_schema(cfg)
    f, pid, cam = res["features"], res["pids"], res["camids"]
    lists = ranked_lists(f[:nq], f[nq:], pid[:nq], pid[nq:], cam[:nq], cam[nq:], args.topk, cfg.TEST.METRIC)
    os.makedirs(args.output, exist_ok=True)
    for i in tqdm(range(min(args.num, nq)), desc="drawing"):
        gallery = lists[i] + nq
        text = None
        if schema is not None:
            text = attribute_text(schema, [pr[i] for pr in res["probs"]],
                                  res["labels"][i] if "labels" in res else None)
        name = os.path.splitext(os.path.basename(res["paths"][i]))[0]
        draw(os.path.join(args.output, f"{i:03d}_{name}.png"), res["paths"][i],
             [res["paths"][g] for g in gallery], pid[gallery] == pid[i], text,
             res["attention"][i] if "attention" in res else None)
    print(f"wrote {min(args.num, nq)} PNGs to {args.output}")


if __name__ == "__main__":
    main()
