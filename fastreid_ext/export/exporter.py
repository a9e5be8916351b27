"""Export the retrieval network of any FastReID / fastreid-ext model to ONNX or TorchScript, and check
the exported file against PyTorch on the spot.

What is exported
----------------
:class:`ExportModule` wraps the model in eval mode: ``images`` (B, 3, H, W) float32, RGB, values
0-255, already resized to ``INPUT.SIZE_TEST`` (FastReID's test transform: bicubic resize, ``ToTensor``
without scaling) -> the eval forward, i.e. FastReID's inference contract ``model({"images": images})``,
the exact call ``--eval-only`` makes. Normalisation (``MODEL.PIXEL_MEAN`` / ``PIXEL_STD``) is the
model's own ``preprocess_image``, so it is inside the graph. Test-time flipping (``TEST.FLIP``) is the
evaluator's, outside the graph. Extra outputs come from the model's ``inference`` dict
(:mod:`fastreid_ext.engine.inference`): by default the attribute probabilities of APR / AANet
(``attributes_0`` .. one per head, what the attribute evaluator and the attribute filter read); any
other tensor the dict holds (AANet's ``attention``, RBNet's ``heatmaps`` / ``mask``) on request.
Nothing model-specific is needed: a plugin model that answers the contract exports as it is.

Formats
-------
* ONNX: ``torch.export.export`` (non-strict) then ``torch.onnx.export(..., dynamo=True)`` at
  :data:`OPSET` with its graph optimisation; ``--dynamic-batch`` makes the batch axis symbolic
  (``torch.export.Dim("batch")``, ONNX ``dim_param`` "batch"). The torch.export-based exporter writes
  opset 18 or newer only (the TorchScript-based one is deprecated in torch 2.x and was where
  FastReID's export scripts failed with dynamic axes); ONNX's own down-converter fails on these graphs
  (ReduceMean's attributes, BatchNormalization-15, GridSample), so older opsets are refused with a
  message rather than half-converted.
* TorchScript: ``torch.jit.trace`` + ``torch.jit.freeze`` (BN folded, weights as constants). Tracing
  records the ops run on the example batch; the parity check at other batch sizes is what shows that
  the batch axis stayed symbolic. torch 2.x marks ``torch.jit`` deprecated (its FutureWarnings are
  silenced here); it still works in the pinned torch, and ONNX is the format to prefer.
* ``--half``: the model in float16, inputs and outputs kept float32 (cast inside the graph), so a
  pipeline feeds the same tensors to either export.

Checks (:func:`compare_features`, :data:`TOLERANCES`)
-----------------------------------------------------
The same images go through the eager PyTorch model (float32) and through the exported file, at batch
1 and at the number of check images (dynamic batch) or at the fixed batch size; per output, the max
absolute difference, the same relative to the largest reference value and the lowest per-image cosine
similarity are reported, and the export fails beyond the tolerance of its dtype. The written file is
the checked one: until the check passes it carries a ``.unverified`` name, and a failed check leaves it
there for inspection.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..engine.inference import inference_outputs
from ..errors import UserError
from .runtime import META_KEY, load_exported

logger = logging.getLogger(__name__)

__all__ = ["OPSET", "MIN_OPSET", "FORMATS", "SUFFIXES", "TOLERANCES", "METRIC_TOLERANCE", "DEFAULT_OUTPUTS",
           "ExportFailure", "ExportModule", "ExportReport", "ParityFailure", "Tolerance", "available_outputs", "check_opset", "output_names",
           "compare_features", "export_model", "metadata"]

#: the ONNX opset every export uses unless ``--opset`` says otherwise: the one place it is pinned
#: (package versions: requirements.txt). 18 = the lowest the torch.export-based exporter writes;
#: ONNX Runtime >= 1.14, TensorRT >= 8.6 and OpenVINO >= 2023.0 read it.
OPSET = 18
#: the lowest opset this exporter writes (see the module docstring)
MIN_OPSET = 18
FORMATS = ("onnx", "torchscript")
#: file name suffix of each format (``tools/train_net.py --eval-only`` recognises them)
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript"}
#: the extras exported by default when the model's ``inference`` gives them
DEFAULT_OUTPUTS = ("features", "attributes")
#: example batch of a dynamic-batch export (torch.export specialises sizes 0 and 1)
_EXAMPLE_BATCH = 2


@dataclass(frozen=True)
class Tolerance:
    """Largest accepted ``max |exported - eager| / max |eager|`` and smallest per-image cosine similarity."""
    rel_max_abs: float
    min_cosine: float


#: accepted disagreement between the exported file and the float32 eager model, per export dtype.
#: float32: graph rewrites (BN folding, fused kernels, another summation order) move features by
#: ~1e-6 relative (measured on every model, tests/export); 1e-4 leaves room for other CPUs and CUDA
#: without admitting a wrong graph (a dropped BN or a wrong normalisation moves them by > 1e-2).
#: float16: 10-bit mantissa, errors accumulate over ~50 layers; measured 1e-3 - 6e-3 relative (cosine
#: >= 0.99999) on every model except AANet in TorchScript, 1.7e-2 (cosine 0.99997: its attention map
#: thresholds and argmaxes flip for a few pixels): 5e-2 relative, cosine 0.999.
TOLERANCES = {"float32": Tolerance(1e-4, 0.99999), "float16": Tolerance(5e-2, 0.999)}
#: accepted change of Rank-1 / mAP (percentage points) between PyTorch and the exported file on a test set
METRIC_TOLERANCE = {"float32": 0.1, "float16": 1.0}


class ExportFailure(UserError):
    """The model (or an option) cannot be exported or the exported file disagrees with PyTorch: the
    message names the operator / module / output and what to do. ``tools/export.py`` prints it in one
    line and exits with status 2 (1 for a :class:`ParityFailure`)."""


class ParityFailure(ExportFailure):
    """The exported file was written but disagrees with PyTorch beyond the tolerance (kept as
    ``<name>.unverified.<ext>`` with its report)."""


# --------------------------------------------------------------------------------------------------
# the exported module
# --------------------------------------------------------------------------------------------------
def available_outputs(model: nn.Module, images: torch.Tensor) -> Dict[str, int]:
    """Tensor outputs of the model's eval ``inference`` on ``images``: name -> number of tensors (0 =
    one tensor, n = a list of n tensors, e.g. one attribute probability per head)."""
    with torch.no_grad():
        out = inference_outputs(model, {"images": images})
    avail = {}
    for name, v in out.items():
        if isinstance(v, torch.Tensor):
            avail[name] = 0
        elif isinstance(v, (list, tuple)) and v and all(isinstance(t, torch.Tensor) for t in v):
            avail[name] = len(v)
    return avail


def output_names(model: nn.Module, images: torch.Tensor, requested: Optional[Sequence[str]] = None
                 ) -> List[Tuple[str, str, Optional[int]]]:
    """Flat output names of the groups to export, ``(name, group, index)``, e.g. ``("attributes_0",
    "attributes", 0)``, from one eval forward on ``images``. Groups: ``requested`` (all must exist; ``features``
    always first), or :data:`DEFAULT_OUTPUTS` that the model gives."""
    avail = available_outputs(model, images)
    if requested is None:
        groups = [n for n in DEFAULT_OUTPUTS if n in avail]
    else:
        missing = [n for n in requested if n not in avail]
        if missing:
            raise ExportFailure(f"{type(model).__name__} has no output {missing}: its eval outputs are {sorted(avail)} "
                                "(the tensors of its inference() dict); pick --outputs among them")
        groups = ["features"] + [n for n in requested if n != "features"]
    names = []
    for g in groups:
        if avail[g] == 0:
            names.append((g, g, None))
        else:
            names.extend((f"{g}_{i}", g, i) for i in range(avail[g]))
    return names


class ExportModule(nn.Module):
    """``images`` (B, 3, H, W) float32 RGB 0-255 -> the model's eval outputs as a tensor (features
    only) or a tuple (``groups`` flattened, see :func:`output_names`).

    ``features`` alone is exactly ``model({"images": images})`` (FastReID's inference contract);
    with extras, the model's ``inference`` dict (whose ``features`` is the same tensor). ``half``:
    the model runs in float16 (``model.half()`` is the caller's), inputs and outputs stay float32.
    """

    def __init__(self, model: nn.Module, groups: Sequence[str] = ("features",), half: bool = False):
        super().__init__()
        self.model = model
        self.groups = tuple(groups)
        self.half = bool(half)

    def forward(self, images: torch.Tensor):
        x = images.half() if self.half else images
        batch = {"images": x}
        if self.groups == ("features",):
            return self.model(batch).float()
        out = inference_outputs(self.model, batch)
        flat = []
        for g in self.groups:
            v = out[g]
            flat.extend([t.float() for t in v] if isinstance(v, (list, tuple)) else [v.float()])
        return tuple(flat)


# --------------------------------------------------------------------------------------------------
# parity
# --------------------------------------------------------------------------------------------------
def compare_features(reference: np.ndarray, exported: np.ndarray) -> Dict[str, float]:
    """``max_abs`` = max |exported - reference|, ``rel_max_abs`` = that / max |reference|, ``min_cosine``
    = the lowest cosine similarity between an image's two outputs (each flattened)."""
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    got = np.asarray(exported, dtype=np.float64).reshape(len(exported), -1)
    if ref.shape != got.shape:
        return {"max_abs": float("inf"), "rel_max_abs": float("inf"), "min_cosine": -1.0,
                "shape_reference": list(ref.shape), "shape_exported": list(got.shape)}
    if not np.isfinite(got).all():
        return {"max_abs": float("inf"), "rel_max_abs": float("inf"), "min_cosine": -1.0}
    diff = float(np.abs(got - ref).max()) if ref.size else 0.0
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    nr, ng = np.linalg.norm(ref, axis=1), np.linalg.norm(got, axis=1)
    both_zero = (nr == 0) & (ng == 0)
    cos = np.where(both_zero, 1.0, (ref * got).sum(1) / np.maximum(nr * ng, 1e-30))
    return {"max_abs": diff, "rel_max_abs": diff / scale if scale > 0 else diff, "min_cosine": float(cos.min())}


def within(stats: Dict[str, float], tol: Tolerance) -> bool:
    return stats["rel_max_abs"] <= tol.rel_max_abs and stats["min_cosine"] >= tol.min_cosine


@dataclass
class ExportReport:
    """What :func:`export_model` did: the file, the export settings and the parity per check batch."""
    path: str
    format: str
    dtype: str
    dynamic_batch: bool
    batch_size: Optional[int]
    input_size: List[int]
    outputs: List[dict]
    opset: Optional[int]
    tolerance: dict
    checks: List[dict] = field(default_factory=list)
    check_images: str = ""
    passed: bool = False
    export_seconds: float = 0.0
    versions: dict = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)
    #: tools/export.py --check-metrics: PyTorch vs exported test-set metrics
    metrics: Optional[dict] = None

    def table(self) -> str:
        """One row per check batch and output group (a group of several tensors, e.g. one attribute
        probability per head, shows its worst tensor; every tensor is in the JSON report)."""
        rows = [f"{'batch':>5}  {'output':<18} {'max |diff|':>11} {'rel':>9} {'min cos':>10}  ok"]
        group_of = {o["name"]: (o["group"] if o["index"] is None else f"{o['group']} (x{self.group_sizes()[o['group']]})")
                    for o in self.outputs}
        seen = {}
        for c in self.checks:
            key = (c["batch"], group_of.get(c["output"], c["output"]))
            if key not in seen:
                seen[key] = dict(c)
            else:
                s = seen[key]
                s["max_abs"], s["rel_max_abs"] = max(s["max_abs"], c["max_abs"]), max(s["rel_max_abs"], c["rel_max_abs"])
                s["min_cosine"], s["ok"] = min(s["min_cosine"], c["min_cosine"]), s["ok"] and c["ok"]
        for (batch, name), c in seen.items():
            rows.append(f"{batch:>5}  {name:<18} {c['max_abs']:>11.3e} {c['rel_max_abs']:>9.2e} "
                        f"{c['min_cosine']:>10.7f}  {'yes' if c['ok'] else 'NO'}")
        return "\n".join(rows)

    def group_sizes(self) -> Dict[str, int]:
        sizes: Dict[str, int] = {}
        for o in self.outputs:
            sizes[o["group"]] = sizes.get(o["group"], 0) + 1
        return sizes

    def save(self, path: Optional[str] = None) -> str:
        path = path or self.path + ".json"
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(asdict(self), f, indent=1)
        os.replace(tmp, path)
        return path


def versions() -> dict:
    import fastreid_ext

    out = {"torch": torch.__version__, "fastreid_ext": getattr(fastreid_ext, "__version__", "")}
    for mod in ("onnx", "onnxruntime", "onnxscript"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return out


# --------------------------------------------------------------------------------------------------
# failure messages
# --------------------------------------------------------------------------------------------------
_TORCH_DIR = os.path.dirname(torch.__file__)


def _model_frame(exc: BaseException) -> Optional[str]:
    """``file:line: code`` of the innermost frame outside torch and this module in ``exc``'s chain."""
    here = os.path.abspath(__file__)
    best = None
    e = exc
    while e is not None:
        for fr in traceback.extract_tb(e.__traceback__):
            fn = os.path.abspath(fr.filename)
            if not fn.startswith(_TORCH_DIR) and fn != here and "site-packages/onnx" not in fn:
                best = f"{fr.filename}:{fr.lineno}: {(fr.line or '').strip()}"
        e = e.__cause__ or e.__context__
    return best


def _chain_text(exc: BaseException) -> str:
    parts, e = [], exc
    while e is not None:
        parts.append(f"{type(e).__name__}: {e}")
        e = e.__cause__ or e.__context__
    return "\n".join(parts)


def _first_line(text: str, n: int = 300) -> str:
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()[:n]
    return ""


def _modules_using(ep, op_name: str) -> List[str]:
    """``path (Class)`` of the innermost modules whose code calls ``op_name`` in the exported program."""
    found = []
    for node in ep.graph.nodes:
        if node.op != "call_function" or op_name not in str(node.target):
            continue
        stack = node.meta.get("nn_module_stack") or {}
        if stack:
            path, cls = list(stack.values())[-1]
            cls = getattr(cls, "__name__", None) or str(cls).rsplit(".", 1)[-1].strip("'>")
            path = path.replace("L__self__.", "").replace("L__self___", "")
            path = path[len("model."):] if path.startswith("model.") else path  # inside ExportModule
            where = f"{path or '(top)'} ({cls})"
        else:
            where = "(top level)"
        trace = (node.meta.get("stack_trace") or "").strip().splitlines()
        code = next((ln.strip() for ln in reversed(trace) if ln.strip().startswith("File")), "")
        m = re.match(r'File "([^"]+)", line (\d+)', code)
        if m:
            where += f" at {m.group(1)}:{m.group(2)}"
        if where not in found:
            found.append(where)
    return found[:3]


def explain_export_error(exc: BaseException, model: nn.Module, ep=None) -> ExportFailure:
    """An :class:`ExportFailure` that says which operator / code / module could not be exported and what
    to do, from an exception raised by ``torch.export`` or the ONNX translation."""
    name = type(model).__name__
    text = _chain_text(exc)
    frame = _model_frame(exc)
    m = re.search(r"op='([\w.]+)', overload='(\w+)'", text)
    if m:  # the ONNX translation has no function for an ATen operator
        op = f"{m.group(1)}.{m.group(2)}"
        users = _modules_using(ep, m.group(1)) if ep is not None else []
        where = f", called by {'; '.join(users)}" if users else ""
        return ExportFailure(
            f"{name}: operator {op} has no ONNX translation at this opset{where}. Use an exportable "
            "equivalent in that module, register a translation (torch.onnx.export custom_translation_table), "
            "or export --format torchscript")
    if "Constraints violated" in text and "batch" in text:
        return ExportFailure(
            f"{name}: the model's code fixes the batch size (torch.export: 'you marked batch as dynamic but your "
            "code specialized it'), so --dynamic-batch cannot be honoured; export without --dynamic-batch "
            "(one file per batch size, --batch-size N) or make the code batch-agnostic (x.view(x.size(0), -1))")
    if "data-dependent" in text or "GuardOnDataDependent" in text:
        where = f" at {frame}" if frame else ""
        return ExportFailure(
            f"{name}: Python control flow depends on tensor values{where}; an exported graph fixes one branch. "
            "Write it with tensor ops (torch.where, masks) so that every input takes the same graph, or export "
            "--format torchscript (which records the branch of the example images: check its parity)")
    where = f" at {frame}" if frame else ""
    return ExportFailure(f"{name} cannot be exported{where}: {type(exc).__name__}: {_first_line(str(exc))} "
                         "(--debug shows the full error)")


def check_opset(opset: int) -> None:
    if opset < MIN_OPSET:
        raise ExportFailure(
            f"--opset {opset}: the torch.export-based ONNX exporter writes opset {MIN_OPSET} or newer, and ONNX's "
            "version converter fails on these graphs (BatchNormalization-15, ReduceMean's attributes; HA-CNN's "
            f"hard attention needs GridSample, which exists from opset 16). Use --opset {MIN_OPSET} or higher "
            "(ONNX Runtime >= 1.14, TensorRT >= 8.6, OpenVINO >= 2023.0 read it)")


# --------------------------------------------------------------------------------------------------
# the two formats
# --------------------------------------------------------------------------------------------------
def export_onnx(module: ExportModule, example: torch.Tensor, path: str, names: Sequence[str], *,
                dynamic_batch: bool, opset: int = OPSET, meta: Optional[dict] = None) -> None:
    """``module`` -> ONNX file ``path`` (input ``images``, outputs ``names``, metadata ``meta``)."""
    check_opset(opset)
    dyn = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    ep = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ep = torch.export.export(module, (example,), dynamic_shapes=dyn, strict=False)
            prog = torch.onnx.export(ep, dynamo=True, opset_version=opset, input_names=["images"],
                                     output_names=list(names), verbose=False)
    except Exception as e:  # noqa: BLE001 - every exporter failure becomes one explained message
        raise explain_export_error(e, module.model, ep=ep) from e
    if dynamic_batch:  # torch.export names the symbol (s0, s34, ...): call it "batch" everywhere
        prog.rename_axes({prog.model.graph.inputs[0].shape[0]: "batch"})
    if meta is not None:
        prog.model.metadata_props[META_KEY] = json.dumps(meta)
    prog.save(path)  # one write (external data for graphs over 2 GB)


def export_torchscript(module: ExportModule, example: torch.Tensor, path: str, *, meta: Optional[dict] = None) -> List[str]:
    """``module`` traced on ``example`` and frozen -> ``path``. Returns the tracer's warnings (each a
    place where a Python value was recorded as a constant)."""
    caught = []
    try:
        with warnings.catch_warnings(record=True) as ws:
            warnings.simplefilter("always")
            with torch.no_grad():
                traced = torch.jit.trace(module.eval(), (example,), check_trace=False, strict=False)
                frozen = torch.jit.freeze(traced)
        caught = sorted({f"{os.path.basename(w.filename)}:{w.lineno}: {_first_line(str(w.message), 120)}"
                         for w in ws if issubclass(w.category, torch.jit.TracerWarning)})
    except Exception as e:  # noqa: BLE001
        if "not implemented for 'Half'" in str(e):
            raise ExportFailure(f"{type(module.model).__name__}: --half TorchScript on {example.device.type}: "
                                f"PyTorch has no float16 kernel here ({_first_line(str(e))}); export --half "
                                "on CUDA (MODEL.DEVICE cuda) or use --format onnx") from e
        raise explain_export_error(e, module.model) from e
    extra = {f"{META_KEY}.json": json.dumps(meta or {})}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.*deprecated")
        torch.jit.save(frozen, path, _extra_files=extra)
    return caught


def metadata(cfg, names, *, fmt: str, dtype: str, dynamic_batch: bool, batch_size: Optional[int], opset) -> dict:
    """What a runtime needs to use the file without the training code: the input spec (size, range,
    channel order, normalisation inside), the outputs, the export settings, versions and the config."""
    h, w = (int(v) for v in cfg.INPUT.SIZE_TEST)
    return {
        "format": fmt, "dtype": dtype, "dynamic_batch": bool(dynamic_batch),
        "batch_size": None if dynamic_batch else int(batch_size), "opset": opset,
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "input": {"name": "images", "layout": "NCHW", "channels": "RGB", "dtype": "float32", "range": "0-255",
                  "size": [h, w], "resize": "bicubic (FastReID's test transform)",
                  "normalisation": "inside the graph: (x - pixel_mean) / pixel_std",
                  "pixel_mean": [float(v) for v in cfg.MODEL.PIXEL_MEAN],
                  "pixel_std": [float(v) for v in cfg.MODEL.PIXEL_STD]},
        "outputs": [{"name": n, "group": g, "index": i} for n, g, i in names],
        "test_metric": cfg.TEST.METRIC,
        "versions": versions(),
        "config": cfg.dump(),
    }


# --------------------------------------------------------------------------------------------------
# export + check
# --------------------------------------------------------------------------------------------------
def _check_batches(images: torch.Tensor, dynamic_batch: bool, batch_size: int) -> List[torch.Tensor]:
    """The check batches: batch 1 and all images (dynamic), or exactly ``batch_size`` images (fixed)."""
    if dynamic_batch:
        return [images[:1], images] if len(images) > 1 else [images]
    reps = -(-batch_size // len(images))
    return [images.repeat(reps, 1, 1, 1)[:batch_size]]


def export_model(cfg, model: nn.Module, fmt: str, output_dir: str, check_images: torch.Tensor, *,
                 dynamic_batch: bool = False, half: bool = False, batch_size: int = 1,
                 outputs: Optional[Sequence[str]] = None, opset: int = OPSET, name: str = "model",
                 check_source: str = "") -> ExportReport:
    """Export ``model`` (built from ``cfg``, weights loaded) to ``<output_dir>/<name><suffix>`` and check
    it against the eager model on ``check_images`` (float32 0-255, the size of ``INPUT.SIZE_TEST``).

    Raises :class:`ExportFailure` when the model cannot be exported or the check fails (the report
    beside the ``.unverified`` file says by how much). Returns the :class:`ExportReport` (also saved as
    ``<file>.json``)."""
    if fmt not in FORMATS:
        raise ExportFailure(f"unknown export format {fmt!r}: choose one of {list(FORMATS)}")
    if not dynamic_batch and int(batch_size) < 1:
        raise ExportFailure(f"--batch-size must be >= 1, got {batch_size}")
    if fmt == "onnx":
        check_opset(opset)
    dtype = "float16" if half else "float32"
    h, w = (int(v) for v in cfg.INPUT.SIZE_TEST)
    if tuple(check_images.shape[1:]) != (3, h, w):
        raise ExportFailure(f"check images are {tuple(check_images.shape[1:])}, the model takes (3, {h}, {w}) "
                            "(INPUT.SIZE_TEST)")
    device = torch.device(cfg.MODEL.DEVICE)
    model = model.eval()
    check_images = check_images.float()
    names = output_names(model, check_images[:2].to(device), outputs)
    groups = list(dict.fromkeys(g for _, g, _ in names))
    os.makedirs(output_dir, exist_ok=True)
    final = os.path.join(output_dir, name + SUFFIXES[fmt])
    stem, suffix = os.path.splitext(final)
    unverified = stem + ".unverified" + suffix
    for p in (final, final + ".json", unverified + ".json"):
        if os.path.exists(p):
            os.remove(p)  # never leave an earlier export next to a failed one

    # references: the float32 eager model, before any conversion to half
    batches = _check_batches(check_images, dynamic_batch, batch_size)
    ref_module = ExportModule(model, groups)
    with torch.no_grad():
        refs = [_as_list(ref_module(b.to(device))) for b in batches]

    export_target = model
    if half:
        import copy

        export_target = copy.deepcopy(model).half()
    module = ExportModule(export_target, groups, half=half).eval()
    example_n = _EXAMPLE_BATCH if dynamic_batch else int(batch_size)
    example = check_images[:1].repeat(example_n, 1, 1, 1).to(device) if len(check_images) < example_n \
        else check_images[:example_n].to(device)
    meta = metadata(cfg, names, fmt=fmt, dtype=dtype, dynamic_batch=dynamic_batch, batch_size=batch_size,
                    opset=opset if fmt == "onnx" else None)
    report = ExportReport(path=final, format=fmt, dtype=dtype, dynamic_batch=bool(dynamic_batch),
                          batch_size=None if dynamic_batch else int(batch_size), input_size=[h, w],
                          outputs=meta["outputs"], opset=meta["opset"], tolerance=asdict(TOLERANCES[dtype]),
                          check_images=check_source, versions=meta["versions"])
    t0 = time.perf_counter()
    if fmt == "onnx":
        export_onnx(module, example, unverified, [n for n, _, _ in names], dynamic_batch=dynamic_batch,
                    opset=opset, meta=meta)
    else:
        report.warnings = export_torchscript(module, example, unverified, meta=meta)
    report.export_seconds = round(time.perf_counter() - t0, 2)

    deployed = load_exported(unverified, device=cfg.MODEL.DEVICE)
    tol = TOLERANCES[dtype]
    for b, ref in zip(batches, refs):
        try:
            got = deployed.run(b)
        except Exception as e:  # noqa: BLE001 - the runtime rejecting the exported graph is an export failure
            raise ExportFailure(f"{type(model).__name__}: the exported file {unverified} does not run in "
                                f"{deployed.runtime_name} at batch {len(b)}: {_first_line(str(e))}") from e
        for (n, _, _), r, g in zip(names, ref, got):
            stats = compare_features(r.detach().cpu().numpy(), g.detach().cpu().numpy())
            report.checks.append({"batch": len(b), "output": n, **stats, "ok": within(stats, tol)})
    report.passed = all(c["ok"] for c in report.checks)
    if not report.passed:
        report.path = unverified
        report.save(unverified + ".json")
        bad = [c for c in report.checks if not c["ok"]][0]
        raise ParityFailure(
            f"{type(model).__name__}: the exported {fmt} file disagrees with PyTorch on output {bad['output']} at "
            f"batch {bad['batch']}: max |diff| {bad['max_abs']:.3e} ({bad['rel_max_abs']:.2e} of the largest value; "
            f"tolerance {tol.rel_max_abs:g}), lowest cosine {bad['min_cosine']:.6f} (tolerance {tol.min_cosine:g}). "
            f"Kept for inspection: {unverified} (+ .json)")
    os.replace(unverified, final)
    report.save()
    return report


def _as_list(out) -> List[torch.Tensor]:
    return list(out) if isinstance(out, (tuple, list)) else [out]
