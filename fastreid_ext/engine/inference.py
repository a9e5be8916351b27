"""Whole-test-set inference for the tools (pictures, filter sweeps): one pass, everything kept."""

from __future__ import annotations

import torch
from tqdm import tqdm

__all__ = ["collect"]


@torch.no_grad()
def collect(model, loader, desc: str = "inference") -> dict:
    """Features, attribute probabilities, attention maps and ids of every image of ``loader``.

    Returns ``{"features": (N, D) tensor, "pids", "camids": (N,) arrays, "paths": list}`` plus, when
    the model returns them, ``"probs"`` (one ``(N, K_h)`` array per attribute head), ``"attention"``
    ((N, h, w) tensor) and, when the batches carry them, ``"labels"`` ((N, F) per-field labels).
    Queries come first (FastReID's test loaders put the ``num_query`` queries before the gallery).
    """
    feats, probs, attn, pids, cams, paths, labels = [], [], [], [], [], [], []
    for batch in tqdm(loader, desc=desc):
        out = model(batch)
        if isinstance(out, dict):
            feats.append(out["features"].cpu())
            if out.get("attributes") is not None:
                probs.append([p.cpu() for p in out["attributes"]])
            if out.get("attention") is not None:
                attn.append(out["attention"].cpu())
        else:
            feats.append(out.cpu())
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
