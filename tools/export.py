#!/usr/bin/env python
"""Export a trained model's retrieval network to ONNX or TorchScript, checked against PyTorch.

    python tools/export.py --config-file configs/Market1501/bagtricks_R50.yml --format onnx \
        --dynamic-batch --output deploy/ MODEL.WEIGHTS logs/market1501/bagtricks_R50/model_final.pth
    python tools/export.py --config-file X --format torchscript --batch-size 64 --output deploy/ MODEL.WEIGHTS W
    python tools/export.py --config-file X --format onnx torchscript --half --check-metrics --output deploy/ ...
    # the deployed file through FastReID's evaluator:
    python tools/train_net.py --config-file X --eval-only MODEL.WEIGHTS deploy/model.onnx

Every model works the same way (FastReID's Baseline, HA-CNN, APR, AANet, RBNet, MMT, plugin models):
the exported graph is the eval forward ``--eval-only`` uses, normalisation included; it takes
(B, 3, H, W) float32 RGB images, values 0-255, resized (bicubic) to ``INPUT.SIZE_TEST``, and returns
the (B, D) feature (plus the attribute probabilities of APR / AANet: ``--outputs``). What the file
takes and gives is also in its metadata, with the config it came from
(:mod:`fastreid_ext.export.exporter`).

Each export is checked on the spot: images of the config's first test set (``--check-on random``:
seeded random images, for machines without the data) go through the eager model and the exported
file, at batch 1 and ``--check-images`` (dynamic batch) or at ``--batch-size``; the table prints the
max |diff|, the same relative to the largest value and the lowest cosine similarity, and the tool fails
(status 1, the file left as ``<name>.unverified.<ext>``) beyond the tolerance of its dtype.
```--check-metrics`` also evaluates the test sets with both and fails if Rank-1, mAP or mINP (and the
attribute accuracies attr-mean / mA, when evaluated) move by more than 0.1 points (1 point for ``--half``).

Files: ``<output>/<name>.onnx`` / ``.torchscript`` and a report ``<file>.json`` beside each.
User errors (config, weights, an operator that cannot be exported, an opset that is too old) print one
``error:`` line and exit with status 2; ``--debug`` shows the traceback.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastreid_ext  # noqa: E402

fastreid_ext.register()  # compat layer + registration, before any fastreid import
import torch  # noqa: E402

from fastreid_ext.errors import UserError, run_cli, user_input  # noqa: E402
from fastreid_ext.export.exporter import (FORMATS, METRIC_TOLERANCE, OPSET, ParityFailure,  # noqa: E402
                                          check_opset, export_model)


def argument_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE", help="the model's config (as for training)")
    p.add_argument("--format", nargs="+", default=["onnx"], choices=FORMATS, help="onnx and/or torchscript")
    p.add_argument("--output", default=None, help="output folder (default: OUTPUT_DIR/export)")
    p.add_argument("--name", default="model", help="file name without suffix (default: model)")
    p.add_argument("--dynamic-batch", action="store_true", help="any batch size (else --batch-size, fixed)")
    p.add_argument("--batch-size", type=int, default=1, help="the fixed batch size without --dynamic-batch")
    p.add_argument("--half", action="store_true", help="float16 weights and compute (inputs/outputs stay float32)")
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET}; 18 or newer)")
    p.add_argument("--outputs", default=None,
                   help="comma-separated output groups of the model's inference dict (default: features, and "
                        "attributes when the model predicts them), e.g. features,attributes,attention")
    p.add_argument("--check-images", type=int, default=16, help="images for the parity check (default 16)")
    p.add_argument("--check-on", choices=("test", "random"), default="test",
                   help="parity images: the config's first test set (default) or seeded random images")
    p.add_argument("--check-metrics", action="store_true",
                   help="also evaluate the test sets through PyTorch and the exported file and compare")
    p.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs, e.g. MODEL.WEIGHTS path")
    return p


def check_images(cfg, source: str, n: int):
    """(images (n, 3, H, W) float 0-255, description): from the first test set, or seeded random."""
    h, w = (int(v) for v in cfg.INPUT.SIZE_TEST)
    if n < 1:
        raise UserError(f"--check-images must be >= 1, got {n}")
    if source == "random":
        g = torch.Generator().manual_seed(0)
        return torch.rand(n, 3, h, w, generator=g) * 255, f"{n} seeded random images"
    from fastreid_ext.data import build_test_loader

    name = cfg.DATASETS.TESTS[0]
    with user_input(f"building the test set {name} for the parity check (or --check-on random)"):
        loader, _ = build_test_loader(cfg, name)
    got = []
    for batch in loader:
        got.append(batch["images"])
        if sum(len(b) for b in got) >= n:
            break
    images = torch.cat(got)[:n].float()
    return images, f"{len(images)} images of {name}"


def compare_metrics(cfg, model, deployed, dtype: str, reference=None) -> dict:
    """Rank-1 / mAP / mINP (and attr-mean / mA when the config evaluates attributes) of every test set
    through PyTorch (``reference``: its results when already computed) and through the exported file."""
    from fastreid_ext.engine import ExtTrainer

    ref = reference if reference is not None else ExtTrainer.test(cfg, model)
    got = ExtTrainer.test(cfg, deployed)
    tol = METRIC_TOLERANCE[dtype]
    def flat(res):  # FastReID's results: one dataset's metrics, or {dataset: metrics} for several
        return res if "mAP" in res else {f"{k}/{m}": v for k, d in res.items() for m, v in d.items()}

    flat_ref, flat_got = flat(ref), flat(got)
    rows = []
    for key in flat_ref:
        if key.split("/")[-1] in ("Rank-1", "mAP", "mINP", "attr-mean", "mA"):
            a, b = float(flat_ref[key]), float(flat_got[key])
            rows.append({"metric": key, "pytorch": a, "exported": b, "diff": b - a, "ok": abs(b - a) <= tol})
    return {"tolerance_points": tol, "rows": rows, "passed": all(r["ok"] for r in rows), "reference": ref}


def main(args) -> int:
    from fastreid_ext.engine import load_model
    from fastreid_ext.export.runtime import load_exported

    if "onnx" in args.format:
        check_opset(args.opset)  # before anything is loaded
    with user_input("reading the config and loading the weights"):
        opts = list(args.opts or [])
        cfg, model = load_model(args.config_file, opts)
        if not cfg.MODEL.WEIGHTS:
            raise UserError("export needs the trained weights: add MODEL.WEIGHTS path/to/model_final.pth")
    outputs = [s.strip() for s in args.outputs.split(",") if s.strip()] if args.outputs else None
    out_dir = args.output or os.path.join(cfg.OUTPUT_DIR or ".", "export")
    images, source = check_images(cfg, args.check_on, args.check_images)
    status, reference = 0, None
    for fmt in args.format:
        print(f"exporting {cfg.MODEL.META_ARCHITECTURE} ({args.config_file}) to {fmt}"
              f"{', dynamic batch' if args.dynamic_batch else f', batch {args.batch_size}'}"
              f"{', float16' if args.half else ''} ...", flush=True)
        report = export_model(cfg, model, fmt, out_dir, images, dynamic_batch=args.dynamic_batch, half=args.half,
                              batch_size=args.batch_size, outputs=outputs, opset=args.opset, name=args.name,
                              check_source=source)
        print(f"wrote {report.path} ({os.path.getsize(report.path) / 2**20:.1f} MiB, {report.export_seconds:.1f} s); "
              f"outputs: {', '.join(g if n == 1 and g == 'features' else f'{g} ({n} tensors)' for g, n in report.group_sizes().items())}")
        print(f"parity against PyTorch on {source} (tolerance: rel {report.tolerance['rel_max_abs']:g}, "
              f"cosine {report.tolerance['min_cosine']:g}):")
        print(report.table())
        if report.warnings:
            print(f"tracer notes (Python values recorded as constants, checked by the parity test): "
                  f"{len(report.warnings)}")
        if args.check_metrics:
            deployed = load_exported(report.path, cfg)
            res = compare_metrics(cfg, model, deployed, report.dtype, reference=reference)
            print(f"test-set metrics, PyTorch vs {fmt} (tolerance {res['tolerance_points']} points):")
            for r in res["rows"]:
                print(f"  {r['metric']:<24} {r['pytorch']:8.2f} {r['exported']:8.2f}  diff {r['diff']:+.3f}"
                      f"  {'ok' if r['ok'] else 'TOO FAR'}")
            reference = res["reference"]  # PyTorch's figures: evaluated once for every format
            report.metrics = {k: v for k, v in res.items() if k != "reference"}
            report.save()
            if not res["passed"]:
                print(f"error: {report.path}: test-set metrics moved beyond {res['tolerance_points']} points",
                      file=sys.stderr)
                status = 1
        print(f"report: {report.path}.json")
    return status


def _cli(args) -> int:
    try:
        return main(args)
    except ParityFailure as e:  # a failed check: status 1, like a failing test (other export failures: 2)
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    args = argument_parser().parse_args()
    if "--debug" in (args.opts or []):
        args.opts = [o for o in args.opts if o != "--debug"]
        args.debug = True
    code = {"rc": 0}

    def run():
        code["rc"] = _cli(args)

    rc = run_cli(run, debug=args.debug)
    sys.exit(rc or code["rc"])
