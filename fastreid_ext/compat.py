"""Compatibility layer: FastReID 1.4.0 (PyPI) on torch 2.x, Python 3.11, numpy 2, CPU or CUDA.

FastReID 1.4.0 was written for torch 1.13 / Python 3.8 and assumes a CUDA device. This module is
the *only* place where fastreid-ext changes FastReID's behaviour. Importing this module changes
nothing; :func:`apply` patches (once; later calls return at once). Every fastreid-ext module that
imports ``fastreid.data`` / ``fastreid.engine`` / ``fastreid.evaluation`` calls it first
(``fastreid_ext.data.build``, ``data.common``, ``data.datasets``, ``modeling``, ``evaluation``,
``engine``), and so does :func:`fastreid_ext.register`; ``import fastreid_ext`` alone does not.
Every patch below names the FastReID line it answers (file and code as found in the 1.4.0 wheel)
and is covered by ``tests/test_compat.py``.

Patches (all idempotent, applied once):

========================  =====================================================================
P1  torch._six            ``data/build.py: from torch._six import string_classes`` (module gone
                          in torch 2.x) -> a tiny ``torch._six`` shim module.
P2  collections.Mapping   ``data/build.py`` and ``evaluation/testing.py: from collections import
                          Mapping`` (removed in 3.10) -> aliases to ``collections.abc``.
P3  DataLoaderX           ``data/data_utils.py: self.stream = torch.cuda.Stream(local_rank)`` and
                          ``BackgroundGenerator.run: torch.cuda.set_device`` -> on a non-CUDA
                          device the loader is a plain ``DataLoader`` (no streams, no pinning);
                          on CUDA it is FastReID's class unchanged.
P4  Baseline.preprocess   ``meta_arch/baseline.py: images.sub_(self.pixel_mean).div_(...)`` edits
                          the batch in place, so flip-test (``evaluation/evaluator.py: inputs
                          ["images"].flip(dims=[3])``) normalised twice; also images were only on
                          the model's device because DataLoaderX moved them -> out-of-place
                          normalisation on ``self.device``; flip-test runs through
                          :class:`FlipAverage`, which also averages the ``inference`` dicts of the
                          project's output mode (attribute probabilities, mirrored attention maps).
P5  ReidEvaluator         ``reid_evaluation.py: _compile_dependencies`` runs ``make`` inside
                          site-packages and ``sys.exit(1)`` on failure -> never compiles; uses the
                          Cython ranker when importable (FastReID's own or the one
                          :func:`build_cython_ranker` put in the user cache), else Python.
                          (Its former dict-output handling is gone: every model returns the
                          feature tensor in eval mode; the project's evaluators unwrap the
                          ``inference`` dicts themselves, ``evaluation/reid_evaluation.py``.)
P6  evaluate_rank         ``evaluation/rank.py: eval_market1501`` builds ``np.asarray(all_cmc)``
                          from rows of different lengths ("inhomogeneous shape") when a query
                          keeps < 50 gallery images, and both rankers return fewer than 10 CMC
                          entries on tiny galleries (``cmc[r - 1]`` for r=10 then fails); the
                          Cython ranker also leaves zeros in the CMC tail of a query keeping fewer
                          than ``max_rank`` images -> a correct Python ranker for those cases and
                          a CMC always ``max_rank`` long.
P7  AMPTrainer            ``engine/train_loop.py: assert torch.cuda.is_available()`` and
                          ``torch.cuda.amp.autocast`` -> AMP on CUDA only (``torch.amp`` API);
                          on any other device the step runs in fp32 with a one-time warning.
P8  Checkpointer.load     ``utils/checkpoint.py: torch.load(f, map_location=...)`` now defaults to
                          ``weights_only=True`` and rejects FastReID/legacy checkpoints holding
                          numpy objects -> try ``weights_only=True``, fall back to a full load
                          (checkpoints are the user's own files) with a log line.
P9  RandomAffine          ``transforms/build.py: T.RandomAffine(..., resample=False,
                          fillcolor=0)`` (kwargs removed from torchvision) -> accepts them and maps
                          to ``interpolation`` / ``fill``.
P10 EvalHook.after_train  ``engine/hooks.py: next_epoch % self._period`` divides by zero for
                          ``TEST.EVAL_PERIOD: 0`` -> period 0 means "evaluate at the end only".
P11 iters_per_epoch       ``engine/defaults.py: len(data_loader.dataset) // IMS_PER_BATCH`` is 0
                          on sets smaller than a batch (no training happens) -> clamped to >= 1.
P12 jaccard distance      ``utils/compute_dist.py: build_dist(..., search_option=0)`` calls
                          ``features.cuda()`` and faiss GPU pointer APIs that current faiss lacks
                          -> CPU faiss index without CUDA, faiss GPU index (option 2) with it
                          (this also avoids ``utils/faiss_utils.py``'s ``torch.cuda.synchronize``,
                          which only options 0/1 reach).
P13 batch collator        ``data/build.py: fast_batch_collator`` returns ``None`` for numpy arrays,
                          tuples or ``None`` fields, so a per-image field silently vanishes ->
                          :func:`strict_batch_collator` converts arrays and raises for the rest.
P14 optimizer zero_grad   ``solver/build.py: build_optimizer(..., contiguous=True)`` links every
                          parameter's ``.grad`` to a view of one flat buffer (``utils/params.py:
                          ContiguousParams``), and ``engine/train_loop.py: optimizer.zero_grad()``
                          now defaults to ``set_to_none=True`` (torch 2.0), which drops the
                          buffer's ``.grad``: the optimizer then never steps and NOTHING TRAINS,
                          silently (FastReID's ``assert_buffer_is_valid`` checks the views, not
                          the buffer) -> such optimizers zero gradients in place.
P15 CommonMetricPrinter   ``utils/events.py: (time.perf_counter() - self._last_write[1]) /
                          (iteration - self._last_write[0])`` divides by zero when the periodic
                          writer fires after the step and again after the epoch at the same
                          iteration (one-iteration epochs) -> the repeated write is skipped.
P16 to_tensor             ``data/transforms/functional.py: torch.ByteTensor(torch.ByteStorage.
                          from_buffer(pic.tobytes()))`` warns "TypedStorage is deprecated" on every
                          image of every run, and ``np.array(pic, np.int32, copy=False)`` (modes
                          I, I;16, F, 1) raises under numpy 2 ("Unable to avoid copy") -> the same
                          conversion with ``torch.frombuffer`` and ``np.asarray``; identical output.
P17 Baseline losses        ``meta_arch/baseline.py: if 'CrossEntropyLoss' in loss_names: ...`` knows
                          four hard-coded names and ignores every other name silently -> the
                          Baseline's losses come from the project's loss registry
                          (:mod:`fastreid_ext.modeling.losses`, built from ``MODEL.LOSSES.NAME`` in
                          ``from_config``; an unknown name is an error listing the registered ones),
                          with the same values and loss keys for FastReID's four names; a
                          Baseline built without a config keeps FastReID's four names.
========================  =====================================================================
"""

from __future__ import annotations

import collections
import collections.abc
import logging
import os
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

_APPLIED = False

#: where :func:`build_cython_ranker` puts FastReID's Cython ranker (never site-packages).
CACHE_DIR = Path(os.environ.get("FASTREID_EXT_CACHE", Path.home() / ".cache" / "fastreid_ext"))


# --------------------------------------------------------------------------------------------
# P1, P2: import-time shims (must run before any ``fastreid.data`` import)
# --------------------------------------------------------------------------------------------
def _patch_imports():
    # P1: fastreid/data/build.py `from torch._six import string_classes`
    if "torch._six" not in sys.modules:
        six = types.ModuleType("torch._six")
        six.string_classes = (str, bytes)
        six.int_classes = int
        six.container_abcs = collections.abc
        six.inf = float("inf")
        sys.modules["torch._six"] = six
        torch._six = six
    # P2: fastreid/data/build.py, fastreid/evaluation/testing.py `from collections import Mapping`
    for name in ("Mapping", "MutableMapping", "Sequence", "Iterable", "Callable"):
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))


# --------------------------------------------------------------------------------------------
# P3: data loader without CUDA streams on CPU
# --------------------------------------------------------------------------------------------
def _patch_dataloader():
    from torch.utils.data import DataLoader

    import fastreid.data.build as fbuild
    import fastreid.data.data_utils as du

    Original = du.DataLoaderX
    if getattr(Original, "_fastreid_ext", False):
        return

    class DataLoaderX(Original):
        """FastReID's prefetching loader on CUDA; a plain DataLoader elsewhere.

        Answers ``data/data_utils.py: self.stream = torch.cuda.Stream(local_rank)``.
        ``device`` (optional) is where batches should end up; by default CUDA when available.
        """

        _fastreid_ext = True

        def __init__(self, local_rank, device=None, **kwargs):
            if device is None:
                device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
            self.device = torch.device(device)
            if self.device.type == "cuda":
                super().__init__(local_rank, **kwargs)
            else:
                kwargs["pin_memory"] = False
                DataLoader.__init__(self, **kwargs)
                self.local_rank = local_rank
                self.stream = None

        def __iter__(self):
            if self.stream is not None:
                return super().__iter__()
            return DataLoader.__iter__(self)

        def shutdown(self):
            if self.stream is not None:
                super().shutdown()

    du.DataLoaderX = DataLoaderX
    fbuild.DataLoaderX = DataLoaderX


# --------------------------------------------------------------------------------------------
# P4: out-of-place normalisation on the model's device (fixes flip-test double normalisation)
# --------------------------------------------------------------------------------------------
def preprocess_image(self, batched_inputs):
    """The batch's images on ``self.device``, normalised out of place (the caller's tensor is left
    unchanged; FastReID edited it in place). Used by FastReID's Baseline (patched) and by every
    fastreid-ext model (``modeling/common.py: ReidMetaArch``)."""
    if isinstance(batched_inputs, dict):
        images = batched_inputs["images"]
    elif isinstance(batched_inputs, torch.Tensor):
        images = batched_inputs
    else:
        raise TypeError(f"batched_inputs must be a dict or a torch.Tensor, got {type(batched_inputs)}")
    images = images.to(self.device, non_blocking=True)
    if not images.is_floating_point():
        images = images.float()
    return (images - self.pixel_mean) / self.pixel_std


#: ``inference`` dict keys holding horizontal translations (..., 2) = (t_x, t_y), not maps: mirrored
#: back by negating t_x (HA-CNN's hard-attention regions)
TRANSLATION_KEYS = ("regions",)
#: ``inference`` dict keys holding (B, 17, h, w) COCO keypoint heatmaps (RBNet's decoder): mirrored
#: back and their left/right channels swapped
KEYPOINT_MAP_KEYS = ("heatmaps",)


def _average(a, b, kind: str = ""):
    """Mean of an output and its mirror-image output: tensors, or dicts / lists / tuples of them.

    Spatial outputs (tensors with >= 3 dims, e.g. (B, H, W) attention maps) of the mirrored images
    are mirrored back first; translations (:data:`TRANSLATION_KEYS`) get their x negated; keypoint
    heatmaps (:data:`KEYPOINT_MAP_KEYS`) are mirrored back with left and right joints swapped;
    vectors (features, probabilities) are averaged as they are.
    """
    if isinstance(a, torch.Tensor):
        if kind == "translation":
            return (a + b * b.new_tensor([-1.0, 1.0])) / 2
        if kind == "keypoints":
            from .data.coco_keypoints import FLIP_INDEX

            return (a + b.flip(dims=[-1])[:, list(FLIP_INDEX)]) / 2
        return (a + (b.flip(dims=[-1]) if a.dim() >= 3 else b)) / 2
    if isinstance(a, dict):
        return {k: _average(a[k], b[k], "translation" if k in TRANSLATION_KEYS else
                            "keypoints" if k in KEYPOINT_MAP_KEYS else "") for k in a}
    if isinstance(a, (list, tuple)):
        return type(a)(_average(x, y, kind) for x, y in zip(a, b))
    return a


class FlipAverage(torch.nn.Module):
    """Eval-time wrapper: the mean of the model's outputs on the images and their mirror images."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, inputs):
        out = self.model(inputs)
        flipped = dict(inputs, images=inputs["images"].flip(dims=[3]))
        return _average(out, self.model(flipped))


def _patch_flip_test():
    import fastreid.engine.defaults as fdefaults
    import fastreid.evaluation as fevaluation
    import fastreid.evaluation.evaluator as fevaluator

    orig = getattr(fevaluator.inference_on_dataset, "_orig", fevaluator.inference_on_dataset)

    def inference_on_dataset(model, data_loader, evaluator, flip_test=False):
        if flip_test:  # evaluator.py: `(outputs + flip_outputs) / 2` fails for dict outputs
            model = FlipAverage(model)
        return orig(model, data_loader, evaluator, flip_test=False)

    inference_on_dataset._orig = orig
    inference_on_dataset.__doc__ = orig.__doc__
    for mod in (fevaluator, fevaluation, fdefaults):
        mod.inference_on_dataset = inference_on_dataset


def _patch_baseline():
    from fastreid.modeling.meta_arch.baseline import Baseline

    Baseline.preprocess_image = preprocess_image
    # targets must follow the images when the loader did not move them (CPU loader, P3)
    if getattr(Baseline.forward, "_fastreid_ext", False):
        return
    orig_forward = Baseline.forward

    def forward(self, batched_inputs):
        if isinstance(batched_inputs, dict) and "targets" in batched_inputs:
            batched_inputs = dict(batched_inputs)
            batched_inputs["targets"] = batched_inputs["targets"].to(self.device)
        return orig_forward(self, batched_inputs)

    forward._fastreid_ext = True
    forward.__doc__ = orig_forward.__doc__
    Baseline.forward = forward


# --------------------------------------------------------------------------------------------
# P5, P6: evaluator and ranker
# --------------------------------------------------------------------------------------------
def eval_market1501_py(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """Market-1501 protocol (same-camera same-id gallery entries removed), any gallery size.

    Returns ``(cmc[max_rank], all_AP, all_INP)`` like FastReID's ranker; the CMC is padded with its
    last value when a query keeps fewer than ``max_rank`` gallery images (a valid query has a
    match, so the padded value is 1).
    """
    distmat = np.asarray(distmat)
    num_q, num_g = distmat.shape
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    indices = np.argsort(distmat, axis=1, kind="stable")
    all_cmc, all_AP, all_INP = [], [], []
    for q in range(num_q):
        order = indices[q]
        keep = ~((g_pids[order] == q_pids[q]) & (g_camids[order] == q_camids[q]))
        raw = (g_pids[order][keep] == q_pids[q]).astype(np.float64)
        if not raw.any():
            continue  # query identity absent from the gallery
        hits = raw.cumsum()
        positions = np.flatnonzero(raw)
        all_INP.append(hits[positions[-1]] / (positions[-1] + 1.0))
        cmc = np.ones(max_rank, dtype=np.float32)
        n = min(max_rank, raw.size)
        cmc[:n] = np.minimum(hits[:n], 1)
        all_cmc.append(cmc)
        all_AP.append(float(np.sum(hits[positions] / (positions + 1.0)) / raw.sum()))
    if not all_cmc:
        raise ValueError("evaluation: no query identity appears in the gallery (from another camera)")
    return np.mean(np.stack(all_cmc), axis=0), all_AP, all_INP


def _import_cython_ranker():
    """FastReID's compiled ranker if importable (its package or our cache), else None."""
    try:
        from fastreid.evaluation.rank_cylib.rank_cy import evaluate_cy

        return evaluate_cy
    except ImportError:
        pass
    cache = str(CACHE_DIR / "rank_cy")
    if os.path.isdir(cache):
        if cache not in sys.path:
            sys.path.insert(0, cache)
        try:
            from rank_cy import evaluate_cy  # noqa: PLC0415

            return evaluate_cy
        except ImportError:
            pass
    return None


def build_cython_ranker(dest: Path | str | None = None) -> Path:
    """Compile FastReID's ``rank_cy.pyx`` into ``dest`` (default: the user cache), not site-packages."""
    import shutil
    import subprocess

    import fastreid.evaluation.rank_cylib as rc

    dest = Path(dest or CACHE_DIR / "rank_cy")
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(rc.__file__).parent / "rank_cy.pyx", dest / "rank_cy.pyx")
    script = (
        "import numpy, sys\n"
        "from setuptools import setup, Extension\n"
        "from Cython.Build import cythonize\n"
        "sys.argv = ['setup', 'build_ext', '--inplace', '-q']\n"
        "setup(ext_modules=cythonize([Extension('rank_cy', ['rank_cy.pyx'],"
        " include_dirs=[numpy.get_include()])], quiet=True, language_level=3))\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=dest, check=True, capture_output=True)
    return dest


def _min_kept(q_pids, g_pids, q_camids, g_camids) -> int:
    """Fewest gallery entries any query keeps after removing its same-id same-camera images."""
    keys, counts = np.unique(np.stack([g_pids, g_camids], 1), axis=0, return_counts=True)
    lookup = {(int(p), int(c)): int(n) for (p, c), n in zip(keys, counts)}
    removed = max((lookup.get((int(p), int(c)), 0) for p, c in zip(q_pids, q_camids)), default=0)
    return len(g_pids) - removed


def evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50,
                  use_metric_cuhk03=False, use_cython=True):
    """Replacement for ``fastreid.evaluation.rank.evaluate_rank`` (P6): same signature and outputs,
    CMC always ``max_rank`` long."""
    distmat = np.ascontiguousarray(distmat, dtype=np.float32)
    args = [np.ascontiguousarray(a, dtype=np.int64) for a in (q_pids, g_pids, q_camids, g_camids)]
    # The Cython ranker leaves zeros in the CMC tail of a query that keeps fewer than max_rank
    # gallery images (non-monotonic CMC): only use it when every query keeps at least max_rank.
    evaluate_cy = _import_cython_ranker() if use_cython and _min_kept(*args) >= max_rank else None
    if use_metric_cuhk03:
        from fastreid.evaluation import rank as frank

        cmc, AP, INP = (evaluate_cy(distmat, *args, max_rank, True) if evaluate_cy
                        else (*frank.eval_cuhk03(distmat, *args, max_rank), []))
    elif evaluate_cy is not None:
        cmc, AP, INP = evaluate_cy(distmat, *args, max_rank, False)
    else:
        return eval_market1501_py(distmat, *args, max_rank)
    cmc = np.asarray(cmc, dtype=np.float32)
    if cmc.size < max_rank:  # Cython ranker caps max_rank at the gallery size
        cmc = np.concatenate([cmc, np.full(max_rank - cmc.size, cmc[-1] if cmc.size else 0.0, np.float32)])
    return cmc, AP, INP


def _patch_evaluation():
    import fastreid.evaluation.rank as frank
    from fastreid.evaluation.reid_evaluation import ReidEvaluator

    frank.evaluate_rank = evaluate_rank  # reid_evaluation imports it lazily from .rank

    def _compile_dependencies(self):
        # P5: reid_evaluation.py `compile_helper()` -> make in site-packages, sys.exit(1) on failure
        if _import_cython_ranker() is None and not getattr(ReidEvaluator, "_warned", False):
            ReidEvaluator._warned = True
            logger.info("Cython ranker not built; using the Python ranker "
                        "(build it with `python -m fastreid_ext.compat --build-ranker`).")

    ReidEvaluator._compile_dependencies = _compile_dependencies


# --------------------------------------------------------------------------------------------
# P7: AMP on CUDA only
# --------------------------------------------------------------------------------------------
def _patch_amp():
    from fastreid.engine import train_loop

    AMP = train_loop.AMPTrainer
    if getattr(AMP.run_step, "_fastreid_ext", False):
        return

    def __init__(self, model, data_loader, optimizer, param_wrapper, grad_scaler=None):
        train_loop.SimpleTrainer.__init__(self, model, data_loader, optimizer, param_wrapper)
        device = next(model.parameters()).device
        self._amp = device.type == "cuda"
        if not self._amp:
            logger.warning("SOLVER.AMP.ENABLED ignored: AMP needs CUDA, the model is on %s; "
                           "training in fp32.", device)
        self.grad_scaler = grad_scaler or (torch.amp.GradScaler("cuda") if self._amp else None)

    def run_step(self):
        if not self._amp:
            return train_loop.SimpleTrainer.run_step(self)
        assert self.model.training, "[AMPTrainer] model was changed to eval mode!"
        import time

        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        with torch.amp.autocast("cuda"):
            loss_dict = self.model(data)
            losses = sum(loss_dict.values())
        self.optimizer.zero_grad()
        self.grad_scaler.scale(losses).backward()
        self._write_metrics(loss_dict, data_time)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()

    run_step._fastreid_ext = True
    AMP.__init__ = __init__
    AMP.run_step = run_step


# --------------------------------------------------------------------------------------------
# P8: checkpoints saved with numpy objects (legacy FastReID) under torch>=2.6 weights_only
# --------------------------------------------------------------------------------------------
def _load_checkpoint_file(self, f):
    if f.endswith(".pkl"):  # FastReID's own pickle branch (caffe2/detectron formats)
        return _orig_load_file(self, f)
    try:
        return torch.load(f, map_location=torch.device("cpu"), weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling restriction
        if "weights_only" not in str(e) and "Unsupported global" not in str(e):
            raise
        logger.info("checkpoint %s holds non-tensor objects (legacy format); loading it fully", f)
        return torch.load(f, map_location=torch.device("cpu"), weights_only=False)


_orig_load_file = None


def _patch_checkpoint():
    global _orig_load_file
    from fastreid.utils.checkpoint import Checkpointer

    if _orig_load_file is None:
        _orig_load_file = Checkpointer._load_file
    Checkpointer._load_file = _load_checkpoint_file


# --------------------------------------------------------------------------------------------
# P9: torchvision RandomAffine lost `resample=` / `fillcolor=`
# --------------------------------------------------------------------------------------------
def _patch_random_affine():
    import torchvision.transforms as T

    import fastreid.data.transforms.build as tbuild

    Base = T.RandomAffine

    class RandomAffine(Base):
        """torchvision RandomAffine accepting FastReID's old ``resample``/``fillcolor`` kwargs."""

        def __init__(self, *args, resample=None, fillcolor=None, **kwargs):
            if resample not in (None, False) and "interpolation" not in kwargs:
                kwargs["interpolation"] = T.InterpolationMode.BILINEAR
            if fillcolor is not None and "fill" not in kwargs:
                kwargs["fill"] = fillcolor
            super().__init__(*args, **kwargs)

    # transforms/build.py refers to `T.RandomAffine` through its module alias `T`
    tbuild.T = types.SimpleNamespace(**{k: getattr(T, k) for k in dir(T) if not k.startswith("__")})
    tbuild.T.RandomAffine = RandomAffine


# --------------------------------------------------------------------------------------------
# P10, P11: trainer arithmetic on small configs
# --------------------------------------------------------------------------------------------
def _patch_trainer():
    from fastreid.engine import hooks
    from fastreid.engine.defaults import DefaultTrainer

    if not isinstance(DefaultTrainer.__dict__.get("iters_per_epoch"), property):
        def _get(self):
            return self.__dict__["_iters_per_epoch"]

        def _set(self, value):
            if value < 1:
                logger.warning("training set smaller than SOLVER.IMS_PER_BATCH: using 1 iteration "
                               "per epoch instead of %d", value)
            self.__dict__["_iters_per_epoch"] = max(1, int(value))

        DefaultTrainer.iters_per_epoch = property(_get, _set, doc="iterations per epoch, >= 1 (P11)")

    def after_train(self):
        next_epoch = self.trainer.epoch + 1
        at_end = next_epoch >= self.trainer.max_epoch
        if at_end and (self._period <= 0 or next_epoch % self._period != 0):
            self._do_eval()
        del self._func

    hooks.EvalHook.after_train = after_train


# --------------------------------------------------------------------------------------------
# P12: Jaccard distance without CUDA
# --------------------------------------------------------------------------------------------
def _patch_distances():
    import fastreid.utils.compute_dist as cd

    orig = getattr(cd.compute_jaccard_distance, "_orig", cd.compute_jaccard_distance)

    def compute_jaccard_distance(features, k1=20, k2=6, search_option=0, fp16=False):
        if not torch.cuda.is_available():
            search_option = 3  # CPU faiss index
        elif search_option < 2:
            search_option = 2  # faiss GPU index; options 0/1 need removed faiss pointer APIs
        k1 = min(k1, features.size(0))
        return orig(features, k1=k1, k2=min(k2, k1), search_option=search_option, fp16=fp16)

    compute_jaccard_distance._orig = orig
    cd.compute_jaccard_distance = compute_jaccard_distance



# --------------------------------------------------------------------------------------------
# P13: a batch collator that never drops a field silently
# --------------------------------------------------------------------------------------------
def strict_batch_collator(batched_inputs, _key: str = "batch"):
    """FastReID's ``fast_batch_collator`` without its silent failure mode.

    Tensors are stacked, numpy arrays become tensors, ints/floats become tensors, strings stay a
    list, dicts recurse. Anything else (``None``, tuples, objects) raises a ``TypeError`` naming the
    field, where FastReID returned ``None`` and the field vanished from the batch.
    """
    elem = batched_inputs[0]
    if isinstance(elem, collections.abc.Mapping):
        return {k: strict_batch_collator([d[k] for d in batched_inputs], k) for k in elem}
    try:
        if isinstance(elem, torch.Tensor):
            return torch.stack(batched_inputs)
        if isinstance(elem, np.ndarray):
            return torch.as_tensor(np.stack(batched_inputs))
        if isinstance(elem, float):
            return torch.tensor(batched_inputs, dtype=torch.float64)
        if isinstance(elem, int):  # includes bool
            return torch.tensor(batched_inputs)
        if isinstance(elem, (str, bytes)):
            return list(batched_inputs)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"cannot batch field '{_key}': {e}") from None
    raise TypeError(f"cannot batch field '{_key}' of type {type(elem).__name__}: per-image fields "
                    "must be tensors, numpy arrays, numbers or strings")


def _patch_collator():
    import fastreid.data.build as fbuild

    fbuild.fast_batch_collator = strict_batch_collator  # looked up when the loaders are built


# --------------------------------------------------------------------------------------------
# P14: contiguous-parameter optimizers must zero gradients in place
# --------------------------------------------------------------------------------------------
def _patch_optimizer():
    import fastreid.engine.defaults as fdefaults
    import fastreid.solver as fsolver
    import fastreid.solver.build as fsb

    orig = getattr(fsb.build_optimizer, "_orig", fsb.build_optimizer)

    def build_optimizer(cfg, model, contiguous=True):
        optimizer, params = orig(cfg, model, contiguous)
        if contiguous:
            zero_grad = optimizer.zero_grad

            def zero_grad_in_place(set_to_none: bool = False):
                # set_to_none=True would unlink the flat gradient buffer from the parameters
                zero_grad(set_to_none=False)

            optimizer.zero_grad = zero_grad_in_place
        return optimizer, params

    build_optimizer._orig = orig
    build_optimizer.__doc__ = orig.__doc__
    for mod in (fsb, fsolver, fdefaults):  # every name FastReID calls it by
        mod.build_optimizer = build_optimizer


# --------------------------------------------------------------------------------------------
# P15: metric printer called twice at one iteration
# --------------------------------------------------------------------------------------------
def _patch_metric_printer():
    from fastreid.utils import events

    orig = getattr(events.CommonMetricPrinter.write, "_orig", events.CommonMetricPrinter.write)

    def write(self):
        last = getattr(self, "_last_write", None)
        if last is not None and last[0] == events.get_event_storage().iter:
            return  # already written at this iteration (after_step, then after_epoch)
        return orig(self)

    write._orig = orig
    events.CommonMetricPrinter.write = write


# --------------------------------------------------------------------------------------------
# P16: FastReID's ToTensor (deprecated storage API, numpy-2 copy=False)
# --------------------------------------------------------------------------------------------
_PIL_DTYPES = {"I": np.int32, "I;16": np.int16, "F": np.float32}


def to_tensor(pic):
    """FastReID's ``to_tensor`` (PIL image or HWC numpy array -> CHW tensor, uint8 -> float, values
    unscaled) without the deprecated storage API and without numpy-1-only ``copy=False``."""
    if isinstance(pic, np.ndarray):
        if pic.ndim not in (2, 3):
            raise ValueError(f"to_tensor: expected an HxW or HxWxC array, got shape {pic.shape}")
        img = torch.from_numpy((pic[:, :, None] if pic.ndim == 2 else pic).transpose((2, 0, 1)))
        return img.float() if img.dtype == torch.uint8 else img
    if pic.mode in _PIL_DTYPES:
        img = torch.from_numpy(np.asarray(pic, _PIL_DTYPES[pic.mode]).copy())
    elif pic.mode == "1":
        img = 255 * torch.from_numpy(np.asarray(pic, np.uint8).copy())
    else:
        img = torch.frombuffer(bytearray(pic.tobytes()), dtype=torch.uint8)
    nchannel = 3 if pic.mode == "YCbCr" else 1 if pic.mode == "I;16" else len(pic.mode)
    img = img.view(pic.size[1], pic.size[0], nchannel).permute(2, 0, 1).contiguous()
    return img.float() if img.dtype == torch.uint8 else img


def _patch_to_tensor():
    from fastreid.data.transforms import functional, transforms

    if functional.to_tensor is not to_tensor:
        to_tensor.fastreid_original = functional.to_tensor  # kept for tests/test_compat.py
    functional.to_tensor = to_tensor
    transforms.to_tensor = to_tensor  # ``ToTensor.__call__`` uses the name imported there


# --------------------------------------------------------------------------------------------
# P17: Baseline losses from the loss registry
# --------------------------------------------------------------------------------------------
#: FastReID Baseline's loss-dict keys (FastReID's names; the registered losses use the same keys)
BASELINE_LOSS_INPUTS = ("logits", "features", "targets")


def _baseline_losses_from_kwargs(loss_kwargs: dict):
    """FastReID's own four losses from a Baseline's ``loss_kwargs`` (a Baseline built without a config)."""
    from torch import nn

    from .modeling.losses import CircleLoss, Cosface, CrossEntropyLoss, TripletLoss

    ce, tri = loss_kwargs.get("ce", {}), loss_kwargs.get("tri", {})
    circle, cosface = loss_kwargs.get("circle", {}), loss_kwargs.get("cosface", {})
    make = {
        "CrossEntropyLoss": lambda: CrossEntropyLoss(eps=ce.get("eps", 0.0), alpha=ce.get("alpha", 0.2),
                                                     scale=ce.get("scale", 1.0)),
        "TripletLoss": lambda: TripletLoss(margin=tri.get("margin", 0.3), norm_feat=tri.get("norm_feat", False),
                                           hard_mining=tri.get("hard_mining", True), scale=tri.get("scale", 1.0)),
        "CircleLoss": lambda: CircleLoss(margin=circle.get("margin", 0.25), gamma=circle.get("gamma", 128),
                                         scale=circle.get("scale", 1.0)),
        "Cosface": lambda: Cosface(margin=cosface.get("margin", 0.25), gamma=cosface.get("gamma", 128),
                                   scale=cosface.get("scale", 1.0)),
    }
    names = list(loss_kwargs.get("loss_names", ()))
    unknown = [n for n in names if n not in make]
    if unknown:
        raise ValueError(f"Baseline built without a config knows FastReID's losses {list(make)}, not {unknown}; "
                         "build it from a config (build_model(cfg)) to use any registered loss")
    return nn.ModuleDict({n: make[n]() for n in names})


def _patch_baseline_losses():
    from fastreid.config import configurable
    from fastreid.modeling.losses import log_accuracy
    from fastreid.modeling.meta_arch.baseline import Baseline

    if getattr(Baseline.losses, "_fastreid_ext", False):
        return
    orig_init = Baseline.__init__.__wrapped__
    orig_from_config = Baseline.from_config.__func__

    @configurable
    def __init__(self, *, loss_fns=None, **kwargs):
        from .modeling.losses import check_loss_inputs

        orig_init(self, **kwargs)
        self.loss_fns = loss_fns if loss_fns is not None else _baseline_losses_from_kwargs(self.loss_kwargs)
        check_loss_inputs("Baseline", self.loss_fns, BASELINE_LOSS_INPUTS)

    def from_config(cls, cfg):
        from .modeling.losses import build_losses

        kwargs = orig_from_config(cls, cfg)
        kwargs["loss_fns"] = build_losses(cfg)
        return kwargs

    def losses(self, outputs, gt_labels):
        """FastReID's Baseline.losses, every loss from the registry (compat P17)."""
        from .modeling.losses import compute_losses

        log_accuracy(outputs["pred_class_logits"].detach(), gt_labels)
        return compute_losses(self.loss_fns, {"logits": outputs["cls_outputs"], "features": outputs["features"],
                                              "targets": gt_labels})

    losses._fastreid_ext = True
    Baseline.__init__ = __init__
    Baseline.from_config = classmethod(from_config)
    Baseline.losses = losses


def apply():
    """Apply every patch once (idempotent). Called by :func:`fastreid_ext.register` and at the top of every
    fastreid-ext module that imports FastReID's data / engine / evaluation packages."""
    global _APPLIED
    if _APPLIED:
        return
    _patch_imports()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fastreid.evaluation.rank warns about Cython at import
        _patch_dataloader()
        _patch_baseline()
        _patch_flip_test()
        _patch_evaluation()
        _patch_amp()
        _patch_checkpoint()
        _patch_random_affine()
        _patch_trainer()
        _patch_distances()
        _patch_collator()
        _patch_optimizer()
        _patch_metric_printer()
        _patch_to_tensor()
        _patch_baseline_losses()
    _APPLIED = True


if __name__ == "__main__":  # python -m fastreid_ext.compat --build-ranker
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build-ranker", action="store_true", help="compile the Cython ranker into the cache")
    a = p.parse_args()
    apply()
    if a.build_ranker:
        if _import_cython_ranker() is not None:
            print("Cython ranker already importable")
        else:
            print("built Cython ranker into", build_cython_ranker())
