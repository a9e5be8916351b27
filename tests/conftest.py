"""Shared fixtures: synthetic data generated on the fly (no files shipped), the real mini Market."""

import os
import sys
from pathlib import Path

import pytest

# One BLAS/OpenMP thread per test process, set before torch is imported (and inherited by the CLI runs
# the tests start): `make test` runs two pytest workers (-n 2) on the 2 cores; two OpenMP threads per
# process on cores shared with other jobs made model tests up to 20x slower (measured).
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import fastreid_ext  # noqa: E402

fastreid_ext.register()  # compat + registration before any fastreid.data import

#: where CI and developers find the shared data (tests skip cleanly when it is absent)
SHARED = Path(os.environ.get("FASTREID_EXT_SHARED", REPO.parent / "shared"))
MINI_MARKET = SHARED / "data" / "mini_market1501"
ATTRIBUTES = SHARED / "data" / "attributes"


def _synthetic_root(tmp_path_factory, domain, num_ids, seed):
    """A ``DATASETS.ROOT`` holding ``synthetic_<domain>`` (num_ids train + num_ids test identities)."""
    from fastreid_ext.data.synthetic import generate

    root = tmp_path_factory.mktemp(f"datasets_{domain}")
    generate(str(root / f"synthetic_{domain}"), domain=domain, num_train_ids=num_ids, num_test_ids=num_ids,
             seed=seed, progress=False)
    return root


@pytest.fixture
def one_thread():
    """Run on one thread: on a 2-core machine shared with other jobs, two OpenMP threads contending
    for the cores made model tests up to 20x slower (measured); restored afterwards. Use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A small Market-style synthetic set (30 + 30 ids), generated once per test session."""
    return _synthetic_root(tmp_path_factory, "market", 30, seed=0)


@pytest.fixture(scope="session")
def synthetic_duke_root(tmp_path_factory):
    """A small Duke-style synthetic set (12 + 12 ids), generated once per test session."""
    return _synthetic_root(tmp_path_factory, "duke", 12, seed=1)


@pytest.fixture(scope="session")
def mini_market_root():
    if not (MINI_MARKET / "bounding_box_train").is_dir():
        pytest.skip(f"real mini Market not found at {MINI_MARKET}")
    return MINI_MARKET


def make_cfg(config_file=None, opts=()):
    """FastReID + fastreid-ext config from one of our YAMLs, with KEY VALUE overrides."""
    from fastreid_ext.config import get_ext_cfg, merge_checked

    cfg = get_ext_cfg()
    merge_checked(cfg, str(REPO / config_file) if config_file else "", list(opts))
    return cfg


def random_feature_metrics(cfg, seeds=5):
    """Rank-1 / mAP of random features on the configured test set (the chance baseline)."""
    import numpy as np
    import torch
    from fastreid.evaluation import ReidEvaluator

    from fastreid_ext.data import build_test_set

    test_set, num_query = build_test_set(cfg, cfg.DATASETS.TESTS[0])
    pids = torch.tensor([it[1] for it in test_set.img_items])
    cams = torch.tensor([it[2] for it in test_set.img_items])
    out = []
    for s in range(seeds):
        ev = ReidEvaluator(cfg, num_query)
        ev.process({"targets": pids, "camids": cams}, torch.randn(len(pids), 64, generator=torch.Generator().manual_seed(s)))
        r = ev.evaluate()
        out.append((r["Rank-1"], r["mAP"]))
    return np.mean(out, axis=0)


def train(cfg, untrained_metrics: bool = False, seed: int | None = None):
    """Train with fastreid-ext's trainer (FastReID's loop and hooks); returns (trainer, eval results),
    and with ``untrained_metrics`` also the metrics of the same (seeded) network before its first
    step, evaluated the same way: the baseline a short training run must beat."""
    from fastreid_ext.engine import ExtTrainer

    if seed is not None:
        import random

        import numpy as np
        import torch

        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
    cfg.freeze()
    trainer = ExtTrainer(cfg)
    trainer.resume_or_load(resume=False)
    before = ExtTrainer.test(trainer.cfg, trainer.model) if untrained_metrics else None
    results = trainer.train()
    return (trainer, results, before) if untrained_metrics else (trainer, results)


def logged_losses(output_dir):
    """``total_loss`` values FastReID's JSON writer logged to ``output_dir/metrics.json``."""
    import json

    rows = [json.loads(line) for line in open(Path(output_dir) / "metrics.json")]
    return [r["total_loss"] for r in rows if "total_loss" in r]


def build_test_losses(*names, opts=()):
    """``{name: loss}`` from the loss registry for ``names``, with config ``opts`` (KEY VALUE pairs);
    triplet with batch-hard mining as FastReID's bagtricks configs."""
    from fastreid_ext.modeling.losses import build_losses

    cfg = make_cfg(None, ["MODEL.LOSSES.NAME", repr(tuple(names)), "MODEL.LOSSES.TRI.HARD_MINING", "True",
                          *opts])
    return build_losses(cfg)
