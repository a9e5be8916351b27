#!/usr/bin/env python
"""Pseudo-label step (k-reciprocal Jaccard + DBSCAN): FastReID's dense reference vs fastreid_ext.uda.

    python benchmarks/bench_pseudo_labels.py [--sizes 2000,12936,16522] [--large] [--k1 30 --k2 6]

Reference: FastReID 1.4.0's own ``fastreid.utils.compute_dist.compute_jaccard_distance`` (dense
N x N; run on the CPU faiss index through the compat patch P12, because its default GPU path needs
``.cuda()`` and faiss pointer APIs current faiss lacks) + scikit-learn ``DBSCAN(metric=
"precomputed")`` on the dense matrix. Ours: :func:`fastreid_ext.uda.jaccard_distance` (sparse) +
:func:`fastreid_ext.uda.dbscan_labels`. Both on the same features (generated once per size, shared
through a .npy file), each run in a fresh Python process (so one cannot hide the other's peak),
reference and ours alternating when ``--repeats`` > 1. ``--large`` adds N = 126,441 (all of
MSMT17), ours only: the reference's three dense float32 N x N arrays need 3 x 64 GB.

Timed step = what runs every epoch: distance + DBSCAN at a fixed eps (``--eps``, default 0.6,
OpenUnReID's fixed value). Untimed afterwards, in the same child: the epoch-0 eps chosen from the
distances (rho = 1.6e-3; reference: MMT's dense ``np.triu`` code; ours: ``select_eps``) and the
labels at that eps, so the table also compares the labels of the full MMT rule.

Memory: peak resident-set growth of the timed step over the RSS just before it (features loaded,
libraries imported and warmed up on 300 points), from ``ru_maxrss``; "process peak" is the whole
child's ``ru_maxrss``, libraries included (the reference needs torch, ~530 MB resident; ours does
not import it). ARI vs ref: adjusted Rand index of our labels against the reference's (same
features, same eps / same rule); outliers count as singletons. ``cpu_s``: the step's process CPU
seconds (all threads), a steadier measure than wall time on a machine shared with other jobs;
``load_avg``: the 1-minute load average when the step ended (2 cores here).

Synthetic "clustered features" (:func:`clustered_features`, seeded): re-id-like identities with
5-30 images each (uniform; mean 17.5, Market has 17.2), ~N/17.5 identities, 8 identities per
"appearance group", 2-6 cameras per identity; latent 128-d Gaussians: group centre g ~ N(0, I),
identity c = g + 0.3 z, camera c + 0.6 z', image + 0.7 z'' (z ~ N(0, I)); 5% unclustered noise
points; L2-normalised, embedded in 2048-d by a random orthonormal map plus small isotropic noise
(0.2 / sqrt(2048) per dimension), L2-normalised again. The parameters put the epoch-0 regime of MMT:
the rho rule picks eps ~0.5-0.57 at N = 13-17k and the pseudo-labels have ARI ~0.4-0.5 against the
identities (noisy, as at the start of adaptation), with ~200 stored Jaccard pairs per point (the
cost driver of the sparse form; cleaner features are cheaper).

Writes benchmarks/results/pseudo_labels.json (table rows + environment + goals).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)), REPO]  # common.py; the repo (fastreid_ext)
LARGE_N = 126441
RHO = 1.6e-3


def clustered_features(n: int, dim: int = 2048, seed: int = 0, latent: int = 128, noise_frac: float = 0.05,
                       ids_per_group: int = 8, tau: float = 0.3, kappa: float = 0.6, sigma: float = 0.7,
                       cams=(2, 6), iso: float = 0.2):
    """(features (n, dim) float32 L2-normalised, identity labels (n,) with unique labels for the noise
    points). See the module docstring for the model."""
    rng = np.random.default_rng(seed)
    n_noise = int(round(noise_frac * n))
    n_clustered = n - n_noise
    sizes = []
    while sum(sizes) < n_clustered:
        sizes.append(int(rng.integers(5, 31)))
    sizes[-1] -= sum(sizes) - n_clustered
    if sizes[-1] < 1 and len(sizes) > 1:
        sizes[-2] += sizes.pop()
    groups = rng.standard_normal((max(1, len(sizes) // ids_per_group), latent), dtype=np.float32)
    z = np.empty((n, latent), np.float32)
    y = np.empty(n, np.int64)
    p = 0
    for i, s in enumerate(sizes):
        c = groups[rng.integers(len(groups))] + tau * rng.standard_normal(latent, dtype=np.float32)
        cam_centres = c + kappa * rng.standard_normal((int(rng.integers(cams[0], cams[1] + 1)), latent),
                                                      dtype=np.float32)
        cam = rng.integers(len(cam_centres), size=s)
        z[p:p + s] = cam_centres[cam] + sigma * rng.standard_normal((s, latent), dtype=np.float32)
        y[p:p + s] = i
        p += s
    z[p:] = rng.standard_normal((n - p, latent), dtype=np.float32) * np.sqrt(1 + tau**2 + kappa**2 + sigma**2)
    y[p:] = len(sizes) + np.arange(n - p)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    q, _ = np.linalg.qr(rng.standard_normal((dim, latent)).astype(np.float32))
    x = np.empty((n, dim), np.float32)
    for s in range(0, n, 16384):  # in chunks: bounded temporaries at N = 126k
        xs = z[s:s + 16384] @ q.T
        xs += iso / np.sqrt(dim) * rng.standard_normal(xs.shape, dtype=np.float32)
        xs /= np.linalg.norm(xs, axis=1, keepdims=True)
        x[s:s + 16384] = xs
    perm = rng.permutation(n)
    return x[perm], y[perm]


# ------------------------------------------------------------------------------------------------
# child side: one method on one feature file, in a fresh process
# ------------------------------------------------------------------------------------------------
def _mmt_eps(dist: np.ndarray, rho: float) -> float:
    """MMT's epoch-0 eps (yxgeee/MMT mmt_train_dbscan.py), verbatim on the dense matrix."""
    tri_mat = np.triu(dist, 1)
    tri_mat = tri_mat[np.nonzero(tri_mat)]
    tri_mat = np.sort(tri_mat, axis=None)
    top_num = np.round(rho * tri_mat.size).astype(int)
    return float(tri_mat[:top_num].mean())


def _methods(a):
    """name -> (step(x) -> (dist, labels), select_eps(dist) -> eps, labels_at(dist, eps))"""
    if a.child == "ref":
        import torch

        import fastreid_ext

        fastreid_ext.register()  # compat P12: CPU faiss index when there is no CUDA
        from fastreid.utils.compute_dist import compute_jaccard_distance
        from sklearn.cluster import DBSCAN

        def labels_at(dist, eps):
            return DBSCAN(eps=eps, min_samples=a.min_samples, metric="precomputed", n_jobs=-1).fit_predict(dist)

        def step(x):
            dist = compute_jaccard_distance(torch.from_numpy(x), k1=a.k1, k2=a.k2)
            return dist, labels_at(dist, a.eps)

        return step, lambda d: _mmt_eps(d, a.rho), labels_at
    from fastreid_ext.uda import NoClustersError, dbscan_labels, jaccard_distance, select_eps

    def labels_at(dist, eps):
        try:
            return dbscan_labels(dist, eps, a.min_samples)
        except NoClustersError:
            return np.full(dist.shape[0], -1)

    def step(x):
        dist = jaccard_distance(x, k1=a.k1, k2=a.k2)
        return dist, labels_at(dist, a.eps)

    return step, lambda d: select_eps(d, a.rho), labels_at


def _rss_mb() -> float:  # as common._rss_mb, without importing common (torch: +530 MB in "ours")
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(a) -> None:
    x = np.load(a.features)
    step, select_eps, labels_at = _methods(a)
    step(np.ascontiguousarray(x[:300]))  # warm-up: lazy imports, thread pools
    import gc

    gc.collect()
    before = _rss_mb()
    t, cpu = time.perf_counter(), time.process_time()
    dist, labels = step(x)
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stored = int(dist.nnz) if hasattr(dist, "nnz") else int((dist < 1).sum())
    t = time.perf_counter()
    eps_rho = select_eps(dist)
    eps_seconds = time.perf_counter() - t
    labels_rho = labels_at(dist, eps_rho)
    np.savez(a.out, labels=labels, labels_rho=labels_rho)
    print("RESULT " + json.dumps({"time_s": seconds, "cpu_s": cpu, "load_avg": os.getloadavg()[0],
                                  "step_peak_mb": max(peak - before, 0.0), "process_peak_mb": peak,
                                  "eps_rho": eps_rho, "eps_select_s": eps_seconds,
                                  "pairs_per_point": stored / x.shape[0]}))


# ------------------------------------------------------------------------------------------------
# parent side
# ------------------------------------------------------------------------------------------------
def run_child(method, features, out, a) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", method, "--features", features, "--out", out,
           "--k1", str(a.k1), "--k2", str(a.k2), "--eps", str(a.eps), "--rho", str(a.rho),
           "--min-samples", str(a.min_samples)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{proc.stderr[-3000:]}")
    res = json.loads(next(line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")))
    with np.load(out) as z:
        res["labels"], res["labels_rho"] = z["labels"], z["labels_rho"]
    return res


def _ari(a, b) -> float:
    from sklearn.metrics import adjusted_rand_score

    def singletons(lab):
        lab = lab.copy()
        out = lab < 0
        lab[out] = lab.max(initial=-1) + 1 + np.arange(out.sum())
        return lab

    return float(adjusted_rand_score(singletons(a), singletons(b)))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="2000,12936,16522", help="N values run with the reference and ours")
    p.add_argument("--large", action="store_true", help=f"also N={LARGE_N} (ours only)")
    p.add_argument("--large-n", type=int, default=LARGE_N, help=argparse.SUPPRESS)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--k1", type=int, default=30)
    p.add_argument("--k2", type=int, default=6)
    p.add_argument("--eps", type=float, default=0.6, help="fixed DBSCAN eps of the timed step")
    p.add_argument("--rho", type=float, default=RHO)
    p.add_argument("--min-samples", type=int, default=4)
    p.add_argument("--repeats", type=int, default=1, help="runs per method and size (median time)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks/results/pseudo_labels.json"))
    p.add_argument("--child", choices=["ref", "ours"], help=argparse.SUPPRESS)
    p.add_argument("--features", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(a)

    from sklearn.metrics import adjusted_rand_score  # noqa: F401  (fail early if missing)

    jobs = [(int(n), ("ref", "ours")) for n in a.sizes.split(",") if n]
    if a.large:
        jobs.append((a.large_n, ("ours",)))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_pl_") as tmp:
        for n, methods in jobs:
            x, y = clustered_features(n, a.dim, seed=a.seed)
            feats = os.path.join(tmp, f"features_{n}.npy")
            np.save(feats, x)
            del x
            runs = {m: [] for m in methods}
            for r in range(a.repeats):
                for m in methods:
                    runs[m].append(run_child(m, feats, os.path.join(tmp, f"{m}_{n}_{r}.npz"), a))
                    print(f"N={n} {m} run {r + 1}: {runs[m][-1]['time_s']:.1f}s", flush=True)
            os.remove(feats)
            res = {m: dict(v[0], time_s=float(np.median([q["time_s"] for q in v])),
                           times=[q["time_s"] for q in v], cpu_s=float(np.median([q["cpu_s"] for q in v])),
                           step_peak_mb=max(q["step_peak_mb"] for q in v)) for m, v in runs.items()}
            labels = {m: (res[m].pop("labels"), res[m].pop("labels_rho")) for m in methods}
            ref = res.get("ref")
            for m in methods:
                q, (lab, lab_rho) = res[m], labels[m]
                row = {"N": n, "method": "FastReID dense (ref)" if m == "ref" else "fastreid_ext.uda (ours)",
                       "time_s": q["time_s"], "speedup": ref["time_s"] / q["time_s"] if ref else None,
                       "cpu_s": q["cpu_s"], "cpu_speedup": ref["cpu_s"] / q["cpu_s"] if ref else None,
                       "load_avg": q["load_avg"],
                       "step_peak_MB": q["step_peak_mb"], "process_peak_MB": q["process_peak_mb"],
                       "clusters": int(lab.max(initial=-1) + 1), "outliers": int((lab < 0).sum()),
                       "ARI_vs_ref": _ari(lab, labels["ref"][0]) if ref else None,
                       "eps_rho": q["eps_rho"], "clusters_rho": int(lab_rho.max(initial=-1) + 1),
                       "ARI_vs_ref_rho": _ari(lab_rho, labels["ref"][1]) if ref else None,
                       "ARI_vs_truth": _ari(lab, y), "pairs_per_point": q["pairs_per_point"],
                       "eps_select_s": q["eps_select_s"], "times": q["times"]}
                rows.append(row)
    from common import environment, report

    report(f"Pseudo-labels (Jaccard k1={a.k1} k2={a.k2} + DBSCAN eps={a.eps} min_samples={a.min_samples}), "
           f"{a.dim}-d synthetic clustered features", rows,
           ["N", "method", "time_s", "speedup", "cpu_s", "cpu_speedup", "load_avg", "step_peak_MB", "process_peak_MB",
            "clusters", "outliers", "ARI_vs_ref", "eps_rho", "clusters_rho", "ARI_vs_ref_rho", "ARI_vs_truth",
            "pairs_per_point"], a.out,
           {"env": dict(environment("cpu"), faiss_gpus=_faiss_gpus()), "command": " ".join(sys.argv),
            "goals": {"ARI_vs_ref": ">= 0.99", "speedup_at_12936": ">= 2.5", "step_peak_MB_at_12936": "<= 1024",
                      f"N={LARGE_N}": "< 15 min and < 16 GB on 2 cores"}})


def _faiss_gpus() -> int:
    import faiss

    return faiss.get_num_gpus()


if __name__ == "__main__":
    main()
