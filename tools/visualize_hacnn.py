#!/usr/bin/env python
"""Draw HA-CNN's attention on query images: the 4 learned hard-attention regions of each block and
the soft (spatial x channel) attention maps, one PNG per query.

    python tools/visualize_hacnn.py --config-file configs/Synthetic/hacnn.yml \
        --output vis/hacnn --num 16 MODEL.WEIGHTS logs/synthetic/hacnn/model_final.pth

Each PNG: the input image with the regions of blocks 1-3 (boxes, one colour per region; block 1
dashed, block 3 solid), then the channel-averaged soft attention map of each block over the image.
Box geometry: region k of block l samples the normalised window x in [t_x - 1, t_x + 1],
y in [t_y - 1/T, t_y + 1/T] (fixed scales, learned translation), mapped here to pixels.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastreid_ext  # noqa: E402

fastreid_ext.register()  # compat layer + registration, before any fastreid import
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from fastreid_ext.data import build_test_loader  # noqa: E402
from fastreid_ext.engine import load_model  # noqa: E402
from fastreid_ext.visualization import overlay_heatmap, picture_tool_parser, save_figure  # noqa: E402

REGION_COLOURS = ("#e41a1c", "#377eb8", "#4daf4a", "#ff7f00", "#984ea3", "#a65628")
BLOCK_STYLES = (":", "--", "-")


def region_boxes(theta: torch.Tensor, num_regions: int, height: int, width: int):
    """Pixel boxes (x0, y0, x1, y1) of each region for translations ``theta`` (T, 2)."""
    boxes = []
    for tx, ty in theta.tolist():
        sx, sy = 1.0, 1.0 / num_regions
        x0, x1 = (tx - sx + 1) / 2 * width, (tx + sx + 1) / 2 * width
        y0, y1 = (ty - sy + 1) / 2 * height, (ty + sy + 1) / 2 * height
        boxes.append((x0, y0, x1, y1))
    return boxes


def draw_query(image, attn, path, title=""):
    """Save one figure: image + boxes, then one soft-attention overlay per block."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches as patches
    import matplotlib.pyplot as plt

    H, W = image.shape[:2]
    n_blocks = len(attn["soft_attn"])
    fig, axes = plt.subplots(1, 1 + n_blocks, figsize=(1.6 * (1 + n_blocks), 3.4))
    axes[0].imshow(image)
    axes[0].set_title("hard attn", fontsize=8)
    for b, theta in enumerate(attn["theta"]):
        if theta is None:
            continue
        for k, (x0, y0, x1, y1) in enumerate(region_boxes(theta, theta.size(0), H, W)):
            axes[0].add_patch(patches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.2,
                                                ls=BLOCK_STYLES[b % 3], ec=REGION_COLOURS[k % 6]))
    for b, soft in enumerate(attn["soft_attn"]):
        overlay_heatmap(axes[1 + b], image, soft.mean(0), f"soft attn {b + 1}", fontsize=8)
    for ax in axes:
        ax.set_xlim(0, W)
        ax.set_ylim(H, 0)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=7)
    save_figure(fig, path, dpi=100)


def main(argv=None):
    args = picture_tool_parser(__doc__.splitlines()[0], "vis/hacnn", 16).parse_args(argv)

    cfg, model = load_model(args.config_file, args.opts)
    if cfg.MODEL.META_ARCHITECTURE != "HACNNReID":
        raise SystemExit(f"{args.config_file}: MODEL.META_ARCHITECTURE is {cfg.MODEL.META_ARCHITECTURE}, "
                         "not HACNNReID")
    loader, num_query = build_test_loader(cfg, cfg.DATASETS.TESTS[0])
    os.makedirs(args.output, exist_ok=True)
    done = 0
    with torch.no_grad(), tqdm(total=min(args.num, num_query), desc="queries") as bar:
        for batch in loader:
            out = model.inference(batch)  # the model's one explicit way to its extras
            for i in range(batch["images"].size(0)):
                if done >= min(args.num, num_query):
                    break
                image = batch["images"][i].permute(1, 2, 0).clamp(0, 255).byte().numpy()
                attn = {"soft_attn": [s[i].cpu() for s in out["soft_attention"]],
                        "theta": [t[i].cpu() if t is not None else None for t in out["regions"]]}
                name = os.path.splitext(os.path.basename(batch["img_paths"][i]))[0]
                draw_query(image, attn, os.path.join(args.output, f"{done:03d}_{name}.png"), name)
                done += 1
                bar.update(1)
            if done >= min(args.num, num_query):
                break
    print(f"wrote {done} PNGs to {args.output}")


if __name__ == "__main__":
    main()
