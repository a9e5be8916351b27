"""Shared benchmark helpers: interleaved timing in one process, peak memory, table + JSON output.

Timing: every model's step is timed in the same process, rounds interleaved (A, B, A, B, ...), so
machine load drifts hit all models alike; we report medians and ratios to the baseline.
Peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the peak resident-set growth of
one training step over the memory resident just before it (first-step allocations excluded by a
warm-up step), measured in a fresh process per model, so one model's freed memory cannot hide
another's peak. (Not a fork: forking a process whose OpenMP threads are running can deadlock.)
"""

from __future__ import annotations

import functools
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


def train_step(model, opt, batch) -> None:
    """One training step as FastReID's trainer runs it: the model's loss dict (inside an event
    storage, where the models log), summed, then zero_grad / backward / step."""
    from fastreid.utils.events import EventStorage

    with EventStorage(0):
        loss = sum(model(batch).values())
    opt.zero_grad()
    loss.backward()
    opt.step()


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
    """Peak memory (MiB) that ``fn()`` needs on CUDA (allocator peak). CPU: see
    :func:`cpu_step_memory_mb` (a fork of a process with OpenMP threads can deadlock)."""
    if torch.device(device).type != "cuda":
        raise ValueError("use cpu_step_memory_mb on CPU")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    sync(device)
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure_step_in_this_process(fn) -> None:
    """Child side of :func:`cpu_step_memory_mb`: one warm-up step, then print the peak RSS growth
    of one more step over the resident memory just before it."""
    fn()
    import gc

    gc.collect()
    before = _rss_mb()
    fn()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"STEP_PEAK_MB {max(peak - before, 0.0):.1f}")


def cpu_step_memory_mb(script: str, name: str, argv: list[str]) -> float:
    """Peak extra resident memory of one training step of model ``name``, measured in a fresh
    Python process (``script --memory-of NAME argv...``), so models cannot hide each other's peak."""
    import subprocess

    out = subprocess.run([sys.executable, script, "--memory-of", name, *argv], capture_output=True,
                         text=True, check=True).stdout
    return float(next(line.split()[1] for line in out.splitlines() if line.startswith("STEP_PEAK_MB")))


def training_step_arguments(description: str, out: str):
    """Parsed arguments of a training-step benchmark (:func:`compare_training_steps`): ``--depth``,
    ``--input H W``, ``--batch``, ``--rounds``, ``--device``, ``--out`` (default ``out``) and the
    memory probe's hidden ``--memory-of``."""
    import argparse

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--depth", default="50x")
    p.add_argument("--input", type=int, nargs=2, default=[256, 128])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=out)
    p.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)  # child process of the memory probe
    return p.parse_known_args()[0]


def compare_training_steps(builders: dict, batch: dict, a, script: str, title: str, targets: dict,
                           optimizer=lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9)):
    """The models' training steps, interleaved in this process, against the first one (the baseline).

    ``builders``: name -> ``fn()`` building the model; ``a``: the parsed arguments (``rounds``,
    ``device``, ``out``, ``memory_of``); ``script``: the benchmark's path (re-run per model for the CPU
    memory probe). Prints and writes the table (``report``); in a memory-probe child
    (``a.memory_of``) only measures that model.
    """
    fns, models = {}, {}
    for name, build in builders.items():
        if a.memory_of and name != a.memory_of:
            continue
        model = models[name] = build().train()
        fns[name] = functools.partial(train_step, model, optimizer(model.parameters()), batch)
    if a.memory_of:
        return measure_step_in_this_process(fns[a.memory_of])
    times = time_interleaved(fns, a.rounds, device=a.device)
    base = next(iter(builders))
    rows = [{"model": n, "params_M": sum(p.numel() for p in models[n].parameters()) / 1e6,
             "train_step_s": times[n], "ratio_vs_baseline": times[n] / times[base],
             "peak_mem_MiB": (peak_memory_mb(fns[n], a.device) if a.device.startswith("cuda")
                              else cpu_step_memory_mb(script, n, sys.argv[1:]))} for n in builders]
    report(title, rows, ["model", "params_M", "train_step_s", "ratio_vs_baseline", "peak_mem_MiB"], a.out,
           {"env": environment(a.device), "targets": targets})
    return rows


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
