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


def _scenes_root(tmp_path_factory, name, train_ids, test_ids):
    """A fresh ``DATASETS.ROOT`` holding half-size ``synthetic_scenes`` (96 x 192 frames, people rendered from
    64 x 32 crops, seed 0) and their selective-search proposals."""
    from fastreid_ext.data.search import read_prw
    from fastreid_ext.data.search.proposals import compute_proposals
    from fastreid_ext.data.synthetic.scenes import generate_scenes

    root = tmp_path_factory.mktemp(name)
    generate_scenes(str(root / "synthetic_scenes"), num_train_ids=train_ids, num_test_ids=test_ids,
                    frame_size=(96, 192), crop_size=(64, 32), seed=0)
    compute_proposals(read_prw(str(root / "synthetic_scenes")), str(root / "synthetic_scenes" / "proposals"),
                      progress=False)
    return root


@pytest.fixture(scope="session")
def scenes_root(tmp_path_factory):
    """A ``DATASETS.ROOT`` holding ``synthetic_scenes`` (person search: 8 train + 16 test ids of the Market-style
    crop set, seed 0: 12 training frames, 24 test frames, 16 queries) stored at half size (96 x 192 frames,
    people rendered from 64 x 32 crops: its selective-search proposals take ~4 s instead of ~14 s at full
    size), generated once per test session."""
    return _scenes_root(tmp_path_factory, "datasets_scenes", 8, 16)


@pytest.fixture(scope="session")
def search_e2e_root(tmp_path_factory):
    """A ``DATASETS.ROOT`` holding ``synthetic_scenes`` for NPSM's end-to-end test: 24 train + 32 test ids
    (32 training frames, 43 test frames, 32 queries), stored at half size like ``scenes_root``, with its
    proposals; ~9 s. Why 24 training identities and 32 queries: with 8 and 16 (the test's earlier fixture,
    full size), 90 steps left a re-id half whose top-1 over 16 queries went from 18.8 to 0.0 with the seed;
    with this set, 96 steps give 15.6-25.0 for seeds 0-3 against the random box's 4.4-9.4
    (test_npsm_e2e.py), and one query is 3.1 points."""
    return _scenes_root(tmp_path_factory, "datasets_search_e2e", 24, 32)


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


#: a small synthetic config for every project meta-architecture: name -> (config file, extra opts); the
#: inference-contract and export tests build each model from it. A new meta-architecture must join
#: (tests/test_inference_contract.py::test_every_project_meta_arch_has_a_config fails otherwise).
ARCH_CONFIGS = {
    # HA-CNN accepts exactly 160x64: narrower blocks instead (4x faster on CPU)
    "HACNNReID": ("configs/Synthetic/hacnn.yml",
                  ["MODEL.HACNN.CHANNELS", "[32, 64, 96]", "MODEL.HACNN.FEAT_DIM", "128"]),
    "APR": ("configs/Synthetic/apr_R18.yml", ["INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]"]),
    "AANet": ("configs/Synthetic/aanet_R18.yml", ["MODEL.AANET.REDUCTION_DIM", "32"]),
    "RBNet": ("configs/Synthetic/rbnet_R18.yml", ["INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]"]),
    # four nets; eval = the test net (mean1)
    "MMT": ("configs/UDA/synthetic_market_to_duke_R18.yml", ["INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]",
                                                             "DATASETS.TESTS", '("SyntheticMarket",)']),
    # a person-search model; on crops (FastReID's contract) it gives the re-id feature of the whole crop
    "NPSM": ("configs/Synthetic/npsm_R18.yml", ["INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]",
                                                "MODEL.NPSM.REID_POOL", "[8, 4]", "DATASETS.TESTS", '("SyntheticMarket",)']),
}
#: every config: CPU, no ImageNet weights, no loader workers, 64 test images per batch, 30 training ids
COMMON = ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.PRETRAIN", "False", "DATALOADER.NUM_WORKERS", "0",
          "TEST.IMS_PER_BATCH", "64", "MODEL.HEADS.NUM_CLASSES", "30"]


def project_meta_archs():
    """Names in FastReID's META_ARCH_REGISTRY whose class comes from fastreid_ext."""
    from fastreid.modeling.meta_arch.build import META_ARCH_REGISTRY

    return sorted(name for name, cls in META_ARCH_REGISTRY._obj_map.items()
                  if getattr(cls, "__module__", "").startswith("fastreid_ext"))


def perturb_bn_statistics(model, seed=1):
    """Non-trivial BN running statistics, so that eval features depend on the saved buffers too."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_((torch.rand(m.running_mean.shape, generator=g) - 0.5) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


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


def gloo_process(rank, world, init_method, out_dir, body, timeout: float = 60, local_group: bool = False):
    """The inside of a :func:`run_gloo_workers` worker: join the gloo group, run ``body()`` (a dict), wait for
    the others, leave, and pickle the dict to ``out_dir/rank<r>.pkl`` (a failure as ``{"error": traceback}``).
    ``local_group``: also set FastReID's local process group (``comm.get_local_size``), as its launcher does."""
    import datetime
    import pickle
    import traceback

    import torch
    import torch.distributed as dist

    try:
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout))
        if local_group:
            from fastreid.utils import comm

            comm._LOCAL_PROCESS_GROUP = dist.new_group(list(range(world)))
        out = body()
        dist.barrier()
        dist.destroy_process_group()
    except BaseException:  # noqa: BLE001 - reported to the parent
        out = {"error": traceback.format_exc()}
    with open(Path(out_dir) / f"rank{rank}.pkl", "wb") as f:
        pickle.dump(out, f)


def run_gloo_workers(worker, args, out_dir, world: int = 2, timeout: float = 240, module: str = ""):
    """Run ``worker(rank, world, init_method, *args, out_dir)`` in ``world`` CPU processes (a gloo group is
    the worker's to create) and return what each pickled to ``out_dir/rank<r>.pkl`` (a worker reports a
    failure as ``{"error": traceback}``, asserted absent here).

    A fresh interpreter per process (never fork a parent whose OpenMP / BLAS pools may be running): the fork
    server imports ``module`` (the test module holding ``worker``) once, clean, and forks the workers from it.
    """
    import multiprocessing as mp
    import pickle
    import socket

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([module or worker.__module__])
    env = {"GLOO_SOCKET_IFNAME": "lo"} if os.path.isdir("/sys/class/net/lo") else {}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            init = f"tcp://127.0.0.1:{s.getsockname()[1]}"
        procs = [ctx.Process(target=worker, args=(r, world, init, *args, str(out_dir)), daemon=True)
                 for r in range(world)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=timeout)
        hung = [p for p in procs if p.is_alive()]
        for p in hung:
            p.kill()
        assert not hung, f"{world} gloo processes did not finish within {timeout:.0f} s"
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    outs = []
    for r in range(world):
        with open(Path(out_dir) / f"rank{r}.pkl", "rb") as f:
            outs.append(pickle.load(f))
        assert "error" not in outs[r], outs[r].get("error")
    return outs


#: seconds each long test took in a quiet `make test` run (two workers); used only to order the suite
HEAVY_TESTS = {
    "tests/uda/test_mmt.py::test_mmt_raises_target_map_above_direct_transfer": 113,
    "tests/modeling/test_rbnet_e2e.py::test_rbnet_trains_on_synthetic": 59,
    "tests/modeling/test_hacnn_e2e.py::test_hacnn_trains_and_evaluates_on_synthetic": 56,
    "tests/modeling/test_apr.py::test_e2e_synthetic_attributes_beat_majority_and_loss_decreases": 55,
    "tests/modeling/test_rbnet_e2e.py::test_rbnet_on_real_mini_market_with_blazepose_keypoints": 53,
    "tests/engine/test_train_e2e.py::test_synthetic_train_eval_beats_random_features": 51,
    "tests/engine/test_interrupted_run.py::test_sigkill_mid_run_then_resume_loses_at_most_one_checkpoint_period": 44,
    "tests/modeling/test_hacnn_e2e.py::test_hacnn_on_real_mini_market": 44,
    "tests/engine/test_train_e2e.py::test_real_mini_market_train_eval": 37,
    "tests/engine/test_train_e2e.py::test_cli_eval_only_and_resume_after_corrupt_checkpoint": 35,
    "tests/modeling/test_npsm_e2e.py::test_npsm_search_beats_a_random_box_baseline": 115,
}


def pytest_collection_modifyitems(session, config, items):
    """Under `make test` (pytest-xdist, `--dist worksteal`, 2 workers) each worker starts with the first or
    second half of the collection: the long end-to-end tests are dealt to the two halves by their measured
    duration (largest first, to the lighter half) and put at the front of their half, so they run first and
    in parallel, and the short tests fill in (measured: a 113 s test collected last ran alone at the end).
    Other tests keep their order. Without xdist the order does not matter and is left alone."""
    if not getattr(config.option, "numprocesses", None):
        return
    heavy = sorted((it for it in items if it.nodeid in HEAVY_TESTS), key=lambda it: -HEAVY_TESTS[it.nodeid])
    if not heavy:
        return
    light = [it for it in items if it.nodeid not in HEAVY_TESTS]
    halves, load = ([], []), [0, 0]
    for it in heavy:
        k = 0 if load[0] <= load[1] else 1
        halves[k].append(it)
        load[k] += HEAVY_TESTS[it.nodeid]
    cut = max(0, (len(items) + 1) // 2 - len(halves[0]))  # the first half is exactly what worker 1 receives
    items[:] = halves[0] + light[:cut] + halves[1] + light[cut:]
