#!/usr/bin/env python
"""NPSM's search, drawn: the shrinking regions with their attention, and the top-5 boxes of a query.

    python tools/visualize_search.py --config-file configs/Synthetic/npsm_R18.yml --output vis/npsm --num 4 \
        MODEL.WEIGHTS logs/synthetic/npsm_R18/model_final.pth

One PNG per query (the first ``--num`` queries of the config's first test set, or ``--queries 3 7``):

* top row: the query crop, then the search in a gallery frame that shows the query's person (the
  first such frame of its gallery): at each step the region being searched (yellow) with the step's
  K x K attention laid over it, and the sub-region it chose (cyan); the last panel the final region
  (green when its IoU with the person's box is >= 0.5, else red) and the ground truth (white, dashed);
* bottom row: the query's five best-scored boxes across its gallery frames (green: a match as the
  benchmark counts it, red: not), with their cosine score.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastreid_ext  # noqa: E402

fastreid_ext.register()  # compat layer + registration, before any fastreid import
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from fastreid_ext.data.search.common import box_iou  # noqa: E402
from fastreid_ext.engine import load_model  # noqa: E402
from fastreid_ext.errors import UserError, run_cli, user_input  # noqa: E402
from fastreid_ext.visualization import picture_tool_parser, save_figure  # noqa: E402


@torch.no_grad()
def search_query(model, test_set, qi):
    """Every gallery frame of query ``qi``: (frame name, image (H, W, 3) uint8 at the model's frame size,
    scale (sx, sy), final box, score, trajectory (T+1, 4), attention (T, K, K)) in the model's frame pixels."""
    out = []
    for bi in range(test_set.batches()):
        names = test_set.chunks[bi]
        if not any(qi in test_set.by_frame[f] for f in names):
            continue
        b = test_set.batch(bi)
        keep = b["pair_queries"] == qi
        b = dict(b, pairs=b["pairs"][keep], pair_queries=b["pair_queries"][keep],
                 pair_frames=[f for f, k in zip(b["pair_frames"], keep.tolist()) if k])
        r = model.inference(b)
        for j, (_, fj) in enumerate(b["pairs"].tolist()):
            out.append({"frame": names[fj], "image": b["images"][fj].permute(1, 2, 0).byte().numpy(),
                        "scale": b["scales"][fj].numpy(), "box": r["boxes"][j].cpu().numpy(),
                        "score": float(r["scores"][j]), "trajectory": r["trajectory"][j].cpu().numpy(),
                        "attention": r["attention"][j].cpu()})
    return out


def _rect(ax, box, colour, dashed=False, lw=1.5):
    import matplotlib.patches as patches

    x1, y1, x2, y2 = box
    ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=lw,
                                   linestyle="--" if dashed else "-"))


def draw_query(query_crop, steps, topk, path, title):
    """The figure of one query (module docstring); ``steps``: the search dict of one frame and its gt box
    (model pixels) or None; ``topk``: (search dict, match, gt box or None) best first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = 0 if steps is None else len(steps[0]["attention"])
    cols = max(t + 2, len(topk) + 1)
    fig, axes = plt.subplots(2, cols, figsize=(2.3 * cols, 3.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    axes[0, 0].imshow(query_crop)
    axes[0, 0].set_title(title, fontsize=7)
    if steps is not None:
        s, gt = steps
        img = s["image"]
        for k in range(t):
            ax = axes[0, k + 1]
            ax.imshow(img)
            x1, y1, x2, y2 = s["trajectory"][k]
            att = s["attention"][k]
            ax.imshow(att.numpy(), cmap="jet", alpha=0.45, extent=(x1, x2, y2, y1), interpolation="bilinear")
            ax.set_xlim(0, img.shape[1])
            ax.set_ylim(img.shape[0], 0)
            _rect(ax, s["trajectory"][k], "yellow")
            _rect(ax, s["trajectory"][k + 1], "cyan")
            ax.set_title(f"step {k + 1}", fontsize=7)
        ax = axes[0, t + 1]
        ax.imshow(img)
        ok = gt is not None and box_iou(s["box"], gt)[0, 0] >= 0.5
        if gt is not None:
            _rect(ax, gt, "white", dashed=True)
        _rect(ax, s["box"], "lime" if ok else "red", lw=2)
        ax.set_title(f"final ({s['frame']})", fontsize=7)
    for j, (s, match, gt) in enumerate(topk):
        ax = axes[1, j + 1]
        ax.imshow(s["image"])
        _rect(ax, s["box"], "lime" if match else "red", lw=2)
        if gt is not None:
            _rect(ax, gt, "white", dashed=True, lw=1)
        ax.set_title(f"#{j + 1} {s['frame']} {s['score']:.2f}", fontsize=7)
    axes[1, 0].text(0.5, 0.5, "top-5 boxes\nacross the gallery\n(green = match)", ha="center", va="center",
                    fontsize=7, transform=axes[1, 0].transAxes)
    save_figure(fig, path)


def main(args):
    from fastreid_ext.data.search.loader import build_search_test_loader, is_search_dataset

    with user_input("loading the model"):
        cfg, model = load_model(args.config_file, args.opts)
    if not getattr(model, "SEARCH", False):
        raise UserError(f"{cfg.MODEL.META_ARCHITECTURE} is not a person-search model (NPSM)")
    name = cfg.DATASETS.TESTS[0]
    if not is_search_dataset(name):
        raise UserError(f"DATASETS.TESTS[0] is {name}, not a person-search dataset")
    with user_input(f"building the test set {name}"):
        _, test_set = build_search_test_loader(cfg, name)
    s = test_set.s
    queries = args.queries or list(range(min(args.num, len(s.queries))))
    bad = [q for q in queries if not 0 <= q < len(s.queries)]
    if bad:
        raise UserError(f"--queries {bad}: the test set has queries 0..{len(s.queries) - 1}")
    os.makedirs(args.output, exist_ok=True)
    written = []
    for qi in tqdm(queries, desc="queries"):
        q = s.queries[qi]
        found = search_query(model, test_set, qi)
        for r in found:  # ground truth in the model's frame pixels
            fr = s.frames[r["frame"]]
            gt = fr.boxes[fr.pids == q.pid]
            r["gt"] = gt[0] * np.tile(r["scale"], 2) if len(gt) else None
        shows = [r for r in found if r["gt"] is not None]
        ranked = sorted(found, key=lambda r: -r["score"])[:5]
        topk = [(r, r["gt"] is not None and box_iou(r["box"], r["gt"])[0, 0] >= 0.5, r["gt"]) for r in ranked]
        crop = test_set.query_crops[qi].permute(1, 2, 0).numpy()
        path = os.path.join(args.output, f"query{qi:04d}_id{q.pid}.png")
        draw_query(crop, (shows[0], shows[0]["gt"]) if shows else None, topk, path, f"query {qi}, id {q.pid}")
        written.append(path)
    print(f"wrote {len(written)} pictures to {args.output}")
    return written


def parse_args(argv=None):
    p = picture_tool_parser(__doc__.split("\n\n")[0], "vis/npsm", 4, "queries")
    p.add_argument("--queries", type=int, nargs="*", default=None, help="query indices (default: the first --num)")
    return p.parse_args(argv)


if __name__ == "__main__":
    a = parse_args()
    sys.exit(run_cli(lambda: main(a)))
