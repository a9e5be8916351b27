"""Trainer hooks of Mutual Mean-Teaching: the mean teachers' EMA and the per-epoch pseudo-label step.

Both are FastReID ``HookBase`` hooks on FastReID's own training loop (:class:`~fastreid_ext.uda.trainer.UDATrainer`):

* :class:`MeanTeacherHook` (``after_step``): eq. 5-6, E[theta] <- a E[theta] + (1 - a) theta, after every
  optimizer step, a = min(1 - 1/(t + 1), ``MODEL.MMT.ALPHA``).
* :class:`PseudoLabelHook` (``before_epoch``): target features from both mean nets (eval mode, test
  transforms), averaged and L2-normalised; k-reciprocal Jaccard distance + DBSCAN
  (:class:`~fastreid_ext.uda.pseudo_labels.DBSCANPseudoLabeler`, ``UDA.CLUSTER``); outliers dropped; the
  four nets' classifiers re-initialised from the clusters' centroids; the optimizer's state reset; the
  loader switched to the new labels. With several processes each extracts its share of the target,
  the features are gathered, rank 0 clusters once and broadcasts the labels, and every process applies
  the same labels and centroids. Its state (the eps chosen at the first epoch, the epoch's labels, the
  per-epoch statistics) is a checkpointable, so ``--resume`` continues with the same eps.

Logged per epoch in FastReID's event storage (``uda/*``: clusters, outliers, eps, seconds, peak MB, and
NMI / ARI when the target's true labels happen to be readable, for logging only), in
``OUTPUT_DIR/uda_stats.json``, and as pictures (``UDA.PLOTS``): ``uda_clusters.png`` (clusters,
outlier fraction and NMI per epoch) and ``uda_pca_epochEEE.png`` (target features projected on their
two principal axes, coloured by pseudo-label, outliers as grey crosses).
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from fastreid.engine.train_loop import HookBase
from fastreid.utils import comm
from torch import nn
from tqdm import tqdm

from ..data.uda import PseudoLabelLoader, TargetSet, target_feature_loader
from .pseudo_labels import DBSCANPseudoLabeler, NoClustersError, cluster_centroids

logger = logging.getLogger(__name__)

__all__ = ["MeanTeacherHook", "PseudoLabelHook", "unwrap", "wrap_ddp"]


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def wrap_ddp(model: nn.Module) -> nn.Module:
    """DDP as FastReID wraps it (CUDA: this process's GPU; CPU/gloo: no device ids)."""
    on_cuda = next(model.parameters()).is_cuda
    return nn.parallel.DistributedDataParallel(model, device_ids=[comm.get_local_rank()] if on_cuda else None,
                                               broadcast_buffers=False)


class MeanTeacherHook(HookBase):
    """Eq. 5-6 after every optimizer step (see the module docstring); logs ``mmt/ema_alpha``."""

    def after_step(self):
        model = unwrap(self.trainer.model)
        a = model.update_mean_nets(self.trainer.iter)
        if comm.is_main_process() and self.trainer.iter % 20 == 0:
            self.trainer.storage.put_scalar("mmt/ema_alpha", a, smoothing_hint=False)


def _broadcast(obj):
    """``obj`` of rank 0 on every process (the object itself in a single process)."""
    if comm.get_world_size() == 1:
        return obj
    box = [obj if comm.is_main_process() else None]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


class PseudoLabelHook(HookBase):
    """The per-epoch pseudo-label step of MMT (module docstring)."""

    def __init__(self, cfg, target: TargetSet, loader: PseudoLabelLoader, output_dir: str = ""):
        c = cfg.UDA.CLUSTER
        rho = c.RHO * (c.RHO_REF_N / len(target) if c.RHO_REF_N > 0 else 1.0)
        self.labeler = DBSCANPseudoLabeler(eps=float(c.EPS) if c.EPS > 0 else None, rho=min(rho, 0.5), k1=c.K1,
                                           k2=c.K2, min_samples=c.MIN_SAMPLES)
        self.target = target
        self.loader = loader
        self.feature_loader = target_feature_loader(cfg, target)
        self.output_dir = output_dir
        self.plots = bool(cfg.UDA.PLOTS)
        self.history: List[dict] = []
        self.labels: Optional[np.ndarray] = None

    # ---------------------------------------------------------------- checkpointable state
    def state_dict(self) -> dict:
        return {"eps": self.labeler.eps, "eps_source": self.labeler.eps_source, "history": self.history,
                "labels": None if self.labels is None else self.labels.tolist()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("eps") is not None:
            self.labeler.eps, self.labeler.eps_source = float(state["eps"]), state.get("eps_source")
        self.history = list(state.get("history", []))
        self.labels = None if state.get("labels") is None else np.asarray(state["labels"], dtype=np.int64)

    # ---------------------------------------------------------------- the step
    @torch.no_grad()
    def extract(self, model: nn.Module) -> List[torch.Tensor]:
        """Per-branch target features, the mean of both mean nets' L2-normalised features, L2-normalised
        again (MMT), in target order, gathered over the processes."""
        modes = {n: getattr(model, n).training for n in ("mean1", "mean2")}
        for n in modes:
            getattr(model, n).eval()
        parts = []
        try:
            for batch in tqdm(self.feature_loader, desc="target features", disable=not comm.is_main_process()):
                f1 = model.branch_features("mean1", batch)
                f2 = model.branch_features("mean2", batch)
                parts.append([F.normalize(F.normalize(a, dim=1) + F.normalize(b, dim=1), dim=1).float().cpu()
                              for a, b in zip(f1, f2)])
        finally:
            for n, m in modes.items():
                getattr(model, n).train(m)
        mine = [torch.cat([p[b] for p in parts]) if parts else None for b in range(model.num_branches())]
        if comm.get_world_size() > 1:  # InferenceSampler: contiguous shares in rank order
            gathered = comm.all_gather(mine)
            mine = [torch.cat([g[b] for g in gathered if g[b] is not None]) for b in range(len(mine))]
        return mine

    def step(self, model: nn.Module, epoch: int) -> dict:
        """Features -> labels (rank 0, broadcast) -> classifiers from centroids. Returns the statistics."""
        t0 = time.perf_counter()
        branches = self.extract(model)
        fused = F.normalize(torch.cat(branches, dim=1), dim=1) if len(branches) > 1 else branches[0]
        extract_s = time.perf_counter() - t0
        payload = None
        if comm.is_main_process():
            try:
                res = self.labeler(fused.numpy(), true_labels=self.target.true_pids)
                payload = (res.labels, res.eps, res.stats)
            except NoClustersError as e:
                payload = e
        payload = _broadcast(payload)
        if isinstance(payload, Exception):
            raise payload
        labels, eps, stats = payload
        if self.labeler.eps is None:  # the other ranks learn the first epoch's eps here
            self.labeler.eps, self.labeler.eps_source = eps, stats["eps_source"]
        model.reset_classifiers([cluster_centroids(f, labels) for f in branches])
        self.labels = labels
        stats = {"epoch": int(epoch), **stats, "extract_s": extract_s}
        self._fused = fused
        return stats

    def before_epoch(self):
        trainer = self.trainer
        model = unwrap(trainer.model)
        stats = self.step(model, trainer.epoch)
        trainer.optimizer.state.clear()  # MMT: a fresh optimizer state each epoch (the classifiers changed size)
        if comm.get_world_size() > 1:  # DDP's buckets were sized for the old classifiers
            trainer._trainer.model = wrap_ddp(model)
        self.loader.set_labels(self.labels)
        self.history = [h for h in self.history if h["epoch"] != stats["epoch"]] + [stats]
        if comm.is_main_process():
            st = trainer.storage
            for k in ("num_clusters", "num_outliers", "outlier_fraction", "eps", "time_s", "rss_peak_mb",
                      "extract_s", "nmi", "ari"):
                if k in stats:
                    st.put_scalar(f"uda/{k}", stats[k], smoothing_hint=False)
            self._write(stats)

    # ---------------------------------------------------------------- records and pictures
    def _write(self, stats: dict) -> None:
        if not self.output_dir:
            return
        path = os.path.join(self.output_dir, "uda_stats.json")
        with open(path + ".tmp", "w") as f:
            json.dump(self.history, f, indent=1)
        os.replace(path + ".tmp", path)
        if self.plots:
            try:
                plot_history(self.history, os.path.join(self.output_dir, "uda_clusters.png"))
                plot_projection(self._fused.numpy(), self.labels,
                                os.path.join(self.output_dir, f"uda_pca_epoch{stats['epoch']:03d}.png"),
                                title=f"epoch {stats['epoch']}: {stats['num_clusters']} clusters, "
                                      f"{stats['num_outliers']} outliers")
            except Exception as e:  # noqa: BLE001 - a picture never stops training
                logger.warning("UDA pictures not written: %s", e)


def plot_history(history: List[dict], path: str) -> None:
    """Clusters, outlier fraction and (when logged) NMI per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..visualization import save_figure

    ep = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3))
    axes[0].plot(ep, [h["num_clusters"] for h in history], "o-")
    axes[0].set_title("clusters")
    axes[1].plot(ep, [100 * h["outlier_fraction"] for h in history], "o-", color="tab:red")
    axes[1].set_title("outliers (%)")
    if all("nmi" in h for h in history):
        axes[2].plot(ep, [h["nmi"] for h in history], "o-", color="tab:green", label="NMI")
        axes[2].plot(ep, [h["ari"] for h in history], "s--", color="tab:olive", label="ARI")
        axes[2].legend(fontsize=7)
        axes[2].set_title("vs true labels (logging only)")
    else:
        axes[2].set_title("no true labels to compare")
    for ax in axes:
        ax.set_xlabel("epoch")
    save_figure(fig, path)


def plot_projection(features: np.ndarray, labels: np.ndarray, path: str, title: str = "",
                    max_points: int = 3000, seed: int = 0) -> None:
    """Target features on their first two principal axes, coloured by pseudo-label (outliers: grey crosses)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..visualization import save_figure

    idx = np.arange(len(features))
    if len(idx) > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_points, replace=False))
    x = features[idx] - features[idx].mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    xy = x @ vt[:2].T
    lab = labels[idx]
    fig, ax = plt.subplots(figsize=(5, 5))
    out = lab < 0
    ax.scatter(xy[out, 0], xy[out, 1], s=10, c="black", marker="x", alpha=0.35, linewidths=0.6, label="outlier")
    ax.scatter(xy[~out, 0], xy[~out, 1], s=8, c=lab[~out] % 20, cmap="tab20")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    save_figure(fig, path)
