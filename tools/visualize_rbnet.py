#!/usr/bin/env python
"""RBNet's Figure 3 for query images, and its keypoint / mask measures on a test set.

    python tools/visualize_rbnet.py --config-file configs/Synthetic/rbnet_R18.yml \
        --output vis/rbnet --num 8 MODEL.WEIGHTS logs/synthetic/rbnet_R18/model_final.pth

One PNG per query (the paper's Figure 3): the image, (a) the keypoint target, the decoder's predicted
heatmaps, (d) the mask M(x), then the channel-averaged backbone activation at conv-1 and layer-4
without the mask (backbone 1 on x: (b), (c)) and with it (backbone 2 on x * M(x): (e), (f)).

Measured over the whole test set (query + gallery) and written to ``<output>/rbnet_measures.json``:

* ``PCK@0.1`` of the heatmap peaks against the keypoint files (the renderer's true keypoints on the
  synthetic sets), reference length = crop height (:mod:`fastreid_ext.evaluation.keypoints`);
* ``mask_on_person``: the share of the mask's mass on the pedestrian's silhouette, and ``uniform``,
  the share a uniform mask would get. Needs silhouettes (``tools/make_synthetic.py --silhouettes``);
  skipped, and said so, when the dataset has none.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastreid_ext  # noqa: E402

fastreid_ext.register()  # compat layer + registration, before any fastreid import
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from tqdm import tqdm  # noqa: E402

from fastreid_ext.data import build_test_loader  # noqa: E402
from fastreid_ext.data.synthetic.generate import silhouette_path  # noqa: E402
from fastreid_ext.engine import load_model  # noqa: E402
from fastreid_ext.errors import UserError, run_cli  # noqa: E402
from fastreid_ext.evaluation.keypoints import heatmap_peaks, mask_on_person, pck  # noqa: E402
from fastreid_ext.modeling.layers.reverse_backbone import resnet_stages  # noqa: E402
from fastreid_ext.visualization import overlay_heatmap, picture_tool_parser, save_figure  # noqa: E402


def load_silhouettes(paths, size):
    """(B, 1, H, W) silhouettes resized (nearest) to ``size``, or None when any image has none."""
    out = []
    for p in paths:
        sp = silhouette_path(os.path.dirname(os.path.dirname(p)), p)
        if not os.path.isfile(sp):
            return None
        m = np.asarray(Image.open(sp).convert("L").resize((size[1], size[0]), Image.NEAREST)) > 127
        out.append(torch.from_numpy(m)[None].float())
    return torch.stack(out)


def activations(model, images):
    """Channel-mean activations at conv-1 and layer-4: backbone 1 on x, backbone 2 on x * M(x)."""
    x = model.preprocess_image({"images": images})
    enc = model.encode(x)
    masked = resnet_stages(model.backbone2, enc["masked"])
    mean = lambda t: t.mean(1)  # noqa: E731
    return enc, {"conv1": mean(enc["stages"][0]), "layer4": mean(enc["stages"][4]),
                 "conv1_masked": mean(masked[0]), "layer4_masked": mean(masked[4])}


def draw_query(image, target, pred, mask, acts, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("(a) keypoint target", target), ("predicted heatmaps", pred), ("(d) mask M(x)", mask),
              ("(b) conv-1", acts["conv1"]), ("(c) layer-4", acts["layer4"]),
              ("(e) conv-1, masked", acts["conv1_masked"]), ("(f) layer-4, masked", acts["layer4_masked"])]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(1.3 * (len(panels) + 1), 2.9))
    axes[0].imshow(image)
    axes[0].set_title(title, fontsize=6)
    axes[0].axis("off")
    for ax, (name, hm) in zip(axes[1:], panels):
        overlay_heatmap(ax, image, hm, name, fontsize=6)
        ax.axis("off")
    save_figure(fig, path)


def main(argv=None):
    args = picture_tool_parser(__doc__.splitlines()[0], "vis/rbnet", 8).parse_args(argv)

    cfg, model = load_model(args.config_file, args.opts)
    if cfg.MODEL.META_ARCHITECTURE != "RBNet":
        raise UserError(f"{args.config_file}: MODEL.META_ARCHITECTURE is {cfg.MODEL.META_ARCHITECTURE}, not RBNet")
    loader, num_query = build_test_loader(cfg, cfg.DATASETS.TESTS[0])
    os.makedirs(args.output, exist_ok=True)
    correct = labelled = seen = drawn = 0
    on_sum = uniform_sum = 0.0
    mask_images, no_silhouettes = 0, False
    with torch.no_grad():
        for batch in tqdm(loader, desc="test images"):
            images = batch["images"].to(model.device)
            enc, acts = activations(model, images)
            H, W = images.shape[-2:]
            peaks = heatmap_peaks(enc["heatmaps"].float().cpu(), (H, W))
            c, n = pck(peaks, batch["keypoints"].float(), max(H, W), 0.1)
            correct, labelled = correct + c, labelled + n
            sil = None if no_silhouettes else load_silhouettes(batch["img_paths"], (H, W))
            no_silhouettes = sil is None
            if sil is not None:
                for i in range(images.size(0)):  # per image, then averaged: every image counts the same
                    on, uni = mask_on_person(enc["mask"][i:i + 1].cpu(), sil[i:i + 1])
                    if on == on:
                        on_sum, uniform_sum, mask_images = on_sum + on, uniform_sum + uni, mask_images + 1
            for i in range(images.size(0)):
                if seen + i >= num_query or drawn >= args.num:
                    break
                image = batch["images"][i].permute(1, 2, 0).clamp(0, 255).byte().numpy()
                name = os.path.splitext(os.path.basename(batch["img_paths"][i]))[0]
                target = batch["heatmaps"][i].amax(0) if "heatmaps" in batch else torch.zeros(H // 2, W // 2)
                draw_query(image, target, enc["heatmaps"][i].amax(0).cpu(), enc["mask"][i, 0].cpu(),
                           {k: v[i].cpu() for k, v in acts.items()},
                           os.path.join(args.output, f"{drawn:03d}_{name}.png"), name)
                drawn += 1
            seen += images.size(0)
    measures = {"images": seen, "PCK@0.1": 100.0 * correct / max(labelled, 1), "labelled_joints": labelled,
                "mask_on_person": 100.0 * on_sum / mask_images if mask_images else None,
                "mask_uniform": 100.0 * uniform_sum / mask_images if mask_images else None,
                "weights": cfg.MODEL.WEIGHTS}
    if no_silhouettes:
        measures["note"] = "no silhouettes in this dataset (tools/make_synthetic.py --silhouettes): mask measure skipped"
    with open(os.path.join(args.output, "rbnet_measures.json"), "w") as f:
        json.dump(measures, f, indent=2)
    print(json.dumps(measures, indent=2))
    print(f"wrote {drawn} PNGs to {args.output}")
    return measures


if __name__ == "__main__":
    sys.exit(run_cli(main))
