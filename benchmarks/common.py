"""Shared benchmark helpers: interleaved timing in one process, peak memory, table + JSON output.

Timing: every model's step is timed in the same process, rounds interleaved (A, B, A, B, ...), so
machine load drifts hit all models alike; we report medians and ratios to the baseline.
Peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the peak resident-set growth of
one training step, measured in a forked child per model (so one model's freed memory cannot hide
another's peak).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_interleaved(fns: dict, rounds: int, warmup: int = 2, device="cpu") -> dict:
    """Median seconds per call of each ``fns[name]()``, rounds interleaved across models."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def peak_memory_mb(fn, device="cpu") -> float:
    """Peak memory (MiB) that ``fn()`` needs: CUDA allocator peak, or CPU RSS growth in a fork."""
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        sync(device)
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: measure, report, exit without running the parent's atexit handlers
        os.close(r)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        fn()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        os.write(w, str((peak - base) / 1024).encode())
        os._exit(0)
    os.close(w)
    data = os.read(r, 64).decode()
    os.waitpid(pid, 0)
    return float(data)


def environment(device) -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
            "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def report(title: str, rows: list[dict], columns: list[str], path: str, extra: dict | None = None):
    """Print a table of ``rows`` (dicts) and write them, with the environment, to JSON ``path``."""
    from tabulate import tabulate

    print(f"\n{title}")
    print(tabulate([[r.get(c, "") for c in columns] for r in rows], headers=columns, floatfmt=".3f"))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump({"title": title, "rows": rows, **(extra or {})}, f, indent=2)
    print(f"wrote {path}")
