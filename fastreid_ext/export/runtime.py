"""Exported files as FastReID models: evaluate the deployed artefact, not the checkpoint.

``tools/train_net.py --config-file X --eval-only MODEL.WEIGHTS model.onnx`` (or ``model.torchscript``)
builds :func:`load_exported` instead of the PyTorch model, and FastReID's ``inference_on_dataset`` +
evaluator (``ExtTrainer.test``) run on it unchanged: :class:`DeployedModel` answers FastReID's inference
contract (``model(batch)`` -> (B, D) features) and the project's ``inference`` (``{"features",
"attributes": [...], ...}``, the groups written by ``tools/export.py``).

* ONNX: :class:`OnnxRuntimeModel`, an ONNX Runtime session (CPU provider; CUDA provider when
  ``MODEL.DEVICE`` is cuda, an error when the installed onnxruntime has none), as many intra-op threads
  as torch uses (``torch.get_num_threads()``), all graph optimisations.
* TorchScript: :class:`TorchScriptModel`, ``torch.jit.load`` on ``MODEL.DEVICE``.

A file exported with a fixed batch size gets its batches cut into chunks of that size, the last one
padded (and the padding dropped), so any loader batch size works. The file's metadata (written by
:mod:`.exporter`) gives the input size, the output groups and the export settings; the config's
``INPUT.SIZE_TEST`` must match it, and a config that evaluates attributes needs a file that outputs them.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import nn

from ..errors import UserError

logger = logging.getLogger(__name__)

__all__ = ["META_KEY", "DeployedModel", "OnnxRuntimeModel", "TorchScriptModel", "is_exported_file", "load_exported"]

_ONNX = (".onnx",)
_TORCHSCRIPT = (".torchscript", ".ts")
#: key of the JSON metadata an exported file carries (ONNX ``metadata_props``; TorchScript extra file
#: ``<key>.json``), written by :mod:`.exporter`
META_KEY = "fastreid_ext"


def is_exported_file(path: str) -> bool:
    """True for ``*.onnx`` / ``*.torchscript`` / ``*.ts`` (what ``tools/export.py`` writes)."""
    return bool(path) and str(path).lower().endswith(_ONNX + _TORCHSCRIPT)


class DeployedModel(nn.Module):
    """An exported file behind FastReID's inference contract. Subclasses implement :meth:`_run_chunk`."""

    runtime_name = "?"

    def __init__(self, path: str, meta: dict):
        super().__init__()
        self.path = str(path)
        self.meta = meta
        self.input_size = tuple(meta.get("input", {}).get("size") or ()) or None
        self.batch_size = None if meta.get("dynamic_batch", True) else meta.get("batch_size")
        outs = meta.get("outputs") or [{"name": "features", "group": "features", "index": None}]
        self.output_specs = [(o["name"], o["group"], o.get("index")) for o in outs]
        self.eval()

    @property
    def groups(self) -> List[str]:
        return list(dict.fromkeys(g for _, g, _ in self.output_specs))

    # -- running ---------------------------------------------------------------------------------
    def _run_chunk(self, images: torch.Tensor) -> List[torch.Tensor]:
        raise NotImplementedError

    def run(self, images: torch.Tensor) -> List[torch.Tensor]:
        """Every output of the file on ``images`` (B, 3, H, W) float 0-255, as CPU tensors in file order."""
        images = torch.as_tensor(images)
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"{self.path}: expects images (B, 3, H, W), got {tuple(images.shape)}")
        if self.input_size and tuple(images.shape[-2:]) != tuple(self.input_size):
            raise ValueError(f"{self.path} was exported for {self.input_size[0]}x{self.input_size[1]} images, got "
                             f"{images.shape[-2]}x{images.shape[-1]}: set INPUT.SIZE_TEST to "
                             f"{list(self.input_size)} (the size it was exported with)")
        images = images.float()
        n = self.batch_size
        if not n or len(images) == n:
            return self._run_chunk(images)
        parts = []
        for s in range(0, len(images), n):
            chunk = images[s:s + n]
            k = len(chunk)
            if k < n:  # pad with copies of the last image, drop their outputs
                chunk = torch.cat([chunk, chunk[-1:].expand(n - k, *chunk.shape[1:])])
            parts.append([o[:k] for o in self._run_chunk(chunk)])
        return [torch.cat([p[i] for p in parts]) for i in range(len(self.output_specs))]

    def inference(self, batched_inputs) -> Dict[str, object]:
        images = batched_inputs["images"] if isinstance(batched_inputs, dict) else batched_inputs
        outs = self.run(images)
        res: Dict[str, object] = {}
        for (name, group, index), t in zip(self.output_specs, outs):
            if index is None:
                res[group] = t
            else:
                res.setdefault(group, []).append(t)
        return res

    def forward(self, batched_inputs):
        return self.inference(batched_inputs)["features"]

    # -- the config it is evaluated with --------------------------------------------------------------
    def check_config(self, cfg) -> None:
        """The config must describe the file: test input size, and attribute outputs when it evaluates
        attributes. Raises :class:`UserError` naming the file."""
        want = tuple(int(v) for v in cfg.INPUT.SIZE_TEST)
        if self.input_size and want != tuple(self.input_size):
            raise UserError(f"{self.path} takes {self.input_size[0]}x{self.input_size[1]} images but INPUT.SIZE_TEST is "
                            f"{list(want)}: evaluate it with the config it was exported from (set INPUT.SIZE_TEST "
                            f"{list(self.input_size)})")
        needs_attr = "attributes" in cfg.INPUT.EXTRA_FIELDS and cfg.TEST.ATTRIBUTES.ENABLED
        if needs_attr and "attributes" not in self.groups:
            raise UserError(f"{self.path} has no attribute outputs (outputs: {self.groups}) but the config evaluates "
                            "attributes (TEST.ATTRIBUTES.ENABLED): export with the default --outputs, or add "
                            "TEST.ATTRIBUTES.ENABLED False")
        arch = self.meta.get("meta_architecture")
        if arch and arch != cfg.MODEL.META_ARCHITECTURE:
            logger.warning("%s was exported from a %s model; the config says %s (only the data and evaluation "
                           "settings of the config are used)", self.path, arch, cfg.MODEL.META_ARCHITECTURE)


class OnnxRuntimeModel(DeployedModel):
    """An ONNX file run by ONNX Runtime."""

    runtime_name = "ONNX Runtime"

    def __init__(self, path: str, device: str = "cpu", threads: Optional[int] = None):
        import onnx
        import onnxruntime as ort

        try:
            proto = onnx.load(path, load_external_data=False)
        except Exception as e:  # noqa: BLE001 - any parse failure means: not an ONNX file
            raise UserError(f"{path} is not a readable ONNX file ({type(e).__name__}: {str(e)[:200]})") from e
        props = {p.key: p.value for p in proto.metadata_props}
        meta = json.loads(props[META_KEY]) if META_KEY in props else _foreign_meta(path, proto)
        super().__init__(path, meta)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise UserError(f"MODEL.DEVICE is {device} but the installed onnxruntime has no CUDA provider "
                                f"(it has {ort.get_available_providers()}): install onnxruntime-gpu, or evaluate "
                                f"{path} with MODEL.DEVICE cpu")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        self.session = ort.InferenceSession(path, sess_options=opts, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.onnx_output_names = [o.name for o in self.session.get_outputs()]
        missing = [n for n, _, _ in self.output_specs if n not in self.onnx_output_names]
        if missing:
            raise UserError(f"{path}: its metadata lists outputs {missing} that the graph lacks "
                            f"(graph outputs: {self.onnx_output_names})")

    def _run_chunk(self, images):
        outs = self.session.run([n for n, _, _ in self.output_specs],
                                {self.input_name: images.detach().cpu().numpy().astype(np.float32, copy=False)})
        return [torch.from_numpy(np.asarray(o, dtype=np.float32)) for o in outs]


def _foreign_meta(path: str, proto) -> dict:
    """Metadata for an ONNX file not written by tools/export.py (e.g. FastReID's own onnx_export):
    the first input is the images, the first output the features."""
    logger.warning("%s has no fastreid_ext metadata: assuming its first input takes (B, 3, H, W) float 0-255 RGB "
                   "images and its first output is the retrieval feature", path)
    inp = proto.graph.input[0].type.tensor_type.shape.dim
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp]
    size = dims[2:4] if len(dims) == 4 and None not in dims[2:4] else None
    return {"input": {"size": size}, "dynamic_batch": dims[0] is None if dims else True,
            "batch_size": dims[0] if dims else None,
            "outputs": [{"name": proto.graph.output[0].name, "group": "features", "index": None}]}


class TorchScriptModel(DeployedModel):
    """A TorchScript file written by ``tools/export.py`` (traced, frozen), run by ``torch.jit``."""

    runtime_name = "TorchScript"

    def __init__(self, path: str, device: str = "cpu"):
        extra = {f"{META_KEY}.json": ""}
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.*deprecated")
                module = torch.jit.load(path, map_location=device, _extra_files=extra)
        except Exception as e:  # noqa: BLE001
            raise UserError(f"{path} is not a readable TorchScript file ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:200] if str(e) else ''})") from e
        meta = json.loads(extra[f"{META_KEY}.json"]) if extra[f"{META_KEY}.json"] else {}
        if not meta:
            logger.warning("%s has no fastreid_ext metadata: its output is taken as the retrieval feature", path)
        super().__init__(path, meta)
        self.module = module
        self.device = torch.device(device)

    def _run_chunk(self, images):
        with torch.no_grad():
            out = self.module(images.to(self.device))
        out = list(out) if isinstance(out, (tuple, list)) else [out]
        return [o.float().cpu() for o in out]


def load_exported(path: str, cfg=None, device: Optional[str] = None) -> DeployedModel:
    """The exported file ``path`` as a :class:`DeployedModel` on ``device`` (default ``cfg.MODEL.DEVICE``
    or cpu); with ``cfg``, checked against it (:meth:`DeployedModel.check_config`)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"exported model not found: {path}")
    device = device or (cfg.MODEL.DEVICE if cfg is not None else "cpu")
    low = path.lower()
    if low.endswith(_ONNX):
        model = OnnxRuntimeModel(path, device=device)
    elif low.endswith(_TORCHSCRIPT):
        model = TorchScriptModel(path, device=device)
    else:
        raise UserError(f"{path}: not an exported model (expected {_ONNX + _TORCHSCRIPT})")
    if cfg is not None:
        model.check_config(cfg)
    return model
