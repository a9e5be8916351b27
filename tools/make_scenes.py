#!/usr/bin/env python
"""Generate synthetic whole scenes for person search, in PRW's on-disk format, and their proposals.

Example (from the repository root)::

    python tools/make_scenes.py --root datasets/synthetic_scenes --domain market --train-ids 30 --test-ids 30 \
        --seed 0 --proposals --preview 4

The labelled people are the identities of ``tools/make_synthetic.py`` with the same ``--domain`` and
``--seed`` (train ids 1..N, test ids after them), so a re-id model trained on those crops searches
these scenes for the same people (:mod:`fastreid_ext.data.synthetic.scenes`). ``--proposals`` also
computes selective-search person proposals for every frame into ``<root>/proposals/`` (cached,
resumable: :mod:`fastreid_ext.data.search.proposals`) and prints their recall of the annotated people.
``--preview N`` draws N test frames with their annotated boxes (green: labelled, red: unlabelled) to
``<root>/preview.png``. ``--cuhk-sysu DIR`` also writes the scenes in CUHK-SYSU's layout to DIR (name it
``<DATASETS.ROOT>/CUHK-SYSU`` for ``CUHKSYSUSearch`` and ``configs/CUHKSYSU/``), with a ``TestG<N>.mat``
for each of ``--gallery-sizes`` (each needs more than N test frames: 44 test ids give 58)
(:func:`fastreid_ext.data.search.convert_to_cuhk_sysu`). Re-running with the same arguments is a no-op.
"""

import argparse
import json
import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from fastreid_ext.data.synthetic.scenes import generate_scenes  # noqa: E402  (light: numpy / PIL)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", required=True, help="output folder (PRW layout)")
    p.add_argument("--domain", choices=("market", "duke"), default="market")
    p.add_argument("--train-ids", type=int, default=30)
    p.add_argument("--test-ids", type=int, default=30)
    p.add_argument("--num-cams", type=int, default=None)
    p.add_argument("--people", type=int, nargs=2, default=(2, 4), metavar=("MIN", "MAX"),
                   help="labelled people per frame")
    p.add_argument("--distractors", type=int, nargs=2, default=(0, 2), metavar=("MIN", "MAX"),
                   help="unlabelled people (id -2) per frame")
    p.add_argument("--frame-size", type=int, nargs=2, default=(192, 384), metavar=("H", "W"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--proposals", action="store_true", help="selective-search person proposals for every frame")
    p.add_argument("--preview", type=int, default=0, metavar="N", help="draw N test frames with their boxes")
    p.add_argument("--cuhk-sysu", default=None, metavar="DIR", help="also write the scenes in CUHK-SYSU's layout")
    p.add_argument("--gallery-sizes", type=int, nargs="+", default=[50], metavar="N",
                   help="with --cuhk-sysu: the TestG<N>.mat protocol files to write")
    return p.parse_args(argv)


def preview(search_set, path: str, n: int) -> None:
    from PIL import Image, ImageDraw

    names = search_set.test[:n]
    tiles = []
    for name in names:
        f = search_set.frames[name]
        im = Image.open(f.path).convert("RGB")
        d = ImageDraw.Draw(im)
        for b, pid in zip(f.boxes, f.pids):
            d.rectangle([float(v) for v in b], outline=(0, 220, 0) if pid >= 0 else (230, 0, 0), width=2)
            d.text((float(b[0]) + 2, float(b[1]) + 1), str(int(pid)), fill=(255, 255, 0))
        d.text((3, 3), name, fill=(255, 255, 255))
        tiles.append(im)
    w, h = tiles[0].size
    cols = 2 if len(tiles) > 1 else 1
    rows = -(-len(tiles) // cols)
    sheet = Image.new("RGB", (w * cols, h * rows), (0, 0, 0))
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % cols) * w, (i // cols) * h))
    sheet.save(path)


def main(argv=None):
    a = parse_args(argv)
    summary = generate_scenes(a.root, domain=a.domain, num_train_ids=a.train_ids, num_test_ids=a.test_ids,
                              num_cams=a.num_cams, people_per_frame=tuple(a.people),
                              distractors_per_frame=tuple(a.distractors), frame_size=tuple(a.frame_size),
                              seed=a.seed, overwrite=a.overwrite, progress=True)
    print(json.dumps(summary, indent=2))
    if a.proposals or a.preview or a.cuhk_sysu:
        from fastreid_ext.data.search import read_prw

        s = read_prw(a.root)
        if a.proposals:
            from fastreid_ext.data.search.proposals import compute_proposals, proposal_recall

            props = compute_proposals(s, os.path.join(a.root, "proposals"))
            hit = tot = 0
            for name, boxes in props.items():
                h, t = proposal_recall(boxes, s.frames[name].boxes)
                hit, tot = hit + h, tot + t
            mean = sum(len(b) for b in props.values()) / max(1, len(props))
            print(f"proposals: {mean:.0f} per frame, recall of the annotated people at IoU 0.5: "
                  f"{100.0 * hit / max(1, tot):.1f}% ({hit}/{tot})")
        if a.preview:
            path = os.path.join(a.root, "preview.png")
            preview(s, path, a.preview)
            print(f"wrote {path}")
        if a.cuhk_sysu:  # a set too small for a gallery size: one "error:" line and status 2, as every tool
            from fastreid_ext.data.search import convert_to_cuhk_sysu
            from fastreid_ext.errors import run_cli, user_input

            def convert():
                with user_input("writing the CUHK-SYSU layout"):
                    counts = convert_to_cuhk_sysu(s, a.cuhk_sysu, a.gallery_sizes, seed=a.seed)
                print(f"wrote CUHK-SYSU layout to {a.cuhk_sysu}: {json.dumps(counts)}")

            return run_cli(convert)
    return 0


if __name__ == "__main__":
    sys.exit(main())
