"""Eval outputs beyond the feature, and whole-test-set inference for the tools.

FastReID's inference contract: a model in eval mode returns the (B, D) retrieval feature tensor, and
every fastreid-ext model does (``DefaultPredictor``, ``inference_on_dataset`` and export tools see a
plain feature). Attribute probabilities, attention maps, heatmaps and masks come from ONE explicit
place: the model's ``inference(batched_inputs)`` method, which returns a dict whose ``"features"`` is
exactly what ``forward`` returns in eval mode, plus the model's extras (APR: ``"attributes"``; AANet:
``"attributes"``, ``"attention"``). :class:`InferenceOutputs` is the output mode the project's evaluator
and tools switch on: a wrapper whose forward is ``inference`` (``{"features": forward(x)}`` for a model
without one, e.g. FastReID's Baseline).
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm import tqdm

__all__ = ["InferenceOutputs", "collect", "inference_outputs"]


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel / DataParallel."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


def inference_outputs(model: nn.Module, batched_inputs) -> dict:
    """``model.inference(batched_inputs)`` (a dict with ``"features"`` and the model's extras), or
    ``{"features": model(batched_inputs)}`` for a model without that method."""
    inner = _unwrap(model)
    fn = getattr(inner, "inference", None)
    if fn is None:
        return {"features": model(batched_inputs)}
    out = fn(batched_inputs)
    if not isinstance(out, dict) or "features" not in out:
        raise TypeError(f"{type(inner).__name__}.inference must return a dict with 'features', got {type(out)}")
    return out


class InferenceOutputs(nn.Module):
    """Output mode of the project's evaluator and tools: ``forward`` = :func:`inference_outputs`.

    Wraps a model for FastReID's ``inference_on_dataset`` (which calls ``model(inputs)`` and hands the
    result to the evaluator), so an evaluator that needs more than the feature receives the dict.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batched_inputs) -> dict:
        return inference_outputs(self.model, batched_inputs)


@torch.no_grad()
def collect(model, loader, desc: str = "inference") -> dict:
    """Features, attribute probabilities, attention maps and ids of every image of ``loader``.

    Returns ``{"features": (N, D) tensor, "pids", "camids": (N,) arrays, "paths": list}`` plus, when
    the model's ``inference`` gives them, ``"probs"`` (one ``(N, K_h)`` array per attribute head), ``"attention"``
    ((N, h, w) tensor) and, when the batches carry them, ``"labels"`` ((N, F) per-field labels).
    Queries come first (FastReID's test loaders put the ``num_query`` queries before the gallery).
    """
    feats, probs, attn, pids, cams, paths, labels = [], [], [], [], [], [], []
    for batch in tqdm(loader, desc=desc):
        out = inference_outputs(model, batch)
        feats.append(out["features"].cpu())
        if out.get("attributes") is not None:
            probs.append([p.cpu() for p in out["attributes"]])
        if out.get("attention") is not None:
            attn.append(out["attention"].cpu())
        pids.append(batch["targets"])
        cams.append(batch["camids"])
        paths.extend(batch["img_paths"])
        if "attributes" in batch:
            labels.append(batch["attributes"])
    res = {"features": torch.cat(feats), "pids": torch.cat(pids).numpy(), "camids": torch.cat(cams).numpy(),
           "paths": paths}
    if probs:
        res["probs"] = [torch.cat([p[j] for p in probs]).numpy() for j in range(len(probs[0]))]
    if attn:
        res["attention"] = torch.cat(attn)
    if labels:
        res["labels"] = torch.cat(labels).numpy()
    return res
