"""Deployment: ONNX and TorchScript export of every model, checked against PyTorch, and the runtimes
that evaluate an exported file (``tools/export.py``; ``tools/train_net.py --eval-only MODEL.WEIGHTS
model.onnx``).

* :mod:`.exporter`: the retrieval network as a graph (:class:`~.exporter.ExportModule`: images in,
  the eval forward's features out, preprocessing inside), ONNX through ``torch.export`` and
  ``torch.onnx`` (opset :data:`~.exporter.OPSET`, the one place it is pinned; package versions are
  pinned in ``requirements.txt``), TorchScript by tracing + freezing, parity checks
  (:func:`~.exporter.compare_features`, :data:`~.exporter.TOLERANCES`) and the messages for what
  cannot be exported (:class:`~.exporter.ExportFailure`).
* :mod:`.runtime`: :class:`~.runtime.OnnxRuntimeModel` and :class:`~.runtime.TorchScriptModel`,
  modules that answer FastReID's inference contract from an exported file, so FastReID's evaluator
  runs on the deployed artefact.
"""

from .exporter import (OPSET, TOLERANCES, ExportFailure, ExportModule, ExportReport, compare_features,
                       export_model, output_names)
from .runtime import DeployedModel, OnnxRuntimeModel, TorchScriptModel, is_exported_file, load_exported

__all__ = ["OPSET", "TOLERANCES", "ExportFailure", "ExportModule", "ExportReport", "compare_features",
           "export_model", "output_names", "DeployedModel", "OnnxRuntimeModel", "TorchScriptModel",
           "is_exported_file", "load_exported"]
