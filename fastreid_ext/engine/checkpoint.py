"""Checkpointing that never loses finished work and never loads the wrong weights quietly.

Saving and resuming:

* saves are atomic (write ``<name>.pth.tmp``, then rename), so a crash mid-save leaves the previous
  checkpoint and ``last_checkpoint`` intact;
* ``--resume`` on a folder whose last checkpoint is unreadable (truncated, corrupt) falls back to
  the newest readable one and says so, instead of failing or silently starting from scratch.

Loading weights (FastReID's ``Checkpointer`` only logs "Skip loading parameter ..." and goes on with a
partly random network):

* every file is checked first: a missing, empty, truncated or foreign file (text, a pickled list, a
  bare tensor, a dict without ``'model'``, a bare state_dict) is a :class:`CheckpointFileError`
  naming the file and what is wrong with it. compat P8's ``weights_only`` fallback for legacy
  checkpoints is kept (the file is read by the patched ``Checkpointer._load_file``);
* ``--resume`` (:meth:`SafeCheckpointer.resume_or_load` with a checkpoint in OUTPUT_DIR) is strict:
  the run's checkpoint must fit the model exactly, else :class:`CheckpointMismatchError` (no fallback
  to an older checkpoint of the same misfit run);
* ``--eval-only`` and the tools (:func:`load_inference_weights`, :meth:`SafeCheckpointer.load_for_inference`)
  accept a checkpoint that differs from the model only in parameters that inference does not use
  (identity classifiers, training-only weights such as AANet's uncertainty log-variances) with one
  warning line; any other difference is a :class:`CheckpointMismatchError` listing the missing,
  unexpected and mis-shaped parameters with their shapes (long lists end in "... and N more");
* fine-tuning from ``MODEL.WEIGHTS`` (training, not resuming) keeps FastReID's lenient loading and
  logs ONE summary line: how many tensors were loaded, and how many were missing / unexpected /
  of another shape, with the first few names.

"Unused at inference" is measured, not declared (:func:`inference_usage`): the model's inference
(``model.inference(batch)`` when it has one, else its eval ``forward``) runs once on a dummy batch of
``INPUT.SIZE_TEST`` images under a ``TorchFunctionMode`` that follows the data: every tensor an op
produces depends on the parameters and buffers its inputs depend on (in-place ops and ``__setitem__``
add to the tensor they modify). A parameter is **used** when a returned tensor depends on it or when a
value depending on it leaves tensor land (``.item()``, ``.tolist()``, ``bool(...)``, ...); all others
are unused: computed-and-dropped identity logits (AANet's GFN/PFN classifiers), classifiers that
inference never calls (FastReID's ``heads.weight``, HA-CNN's ``classifier_global/local``), loss
parameters (AANet's ``heads.uncertainty.log_vars``), BatchNorm's ``num_batches_tracked``. This works
for any model added later without a list of names. A checkpoint key the model does not have at all
is unused when the model's deepest module on its path is never called at inference and holds no used
parameter (e.g. ``heads.uncertainty`` with ``MODEL.AANET.UNCERTAINTY False``), or, for an eval model
built with ``MODEL.HEADS.NUM_CLASSES 0`` (no identity classifiers, what ``--eval-only`` builds), when the
same config built with classes has that key and does not use it (the *probe* model). When the dummy
forward fails, nothing counts as unused (every difference is an error, and the message says why).
"""

from __future__ import annotations

import logging
import os
import pickle
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from fastreid.utils.checkpoint import Checkpointer, _filter_reused_missing_keys, _strip_prefix_if_present
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import UserError

__all__ = ["SafeCheckpointer", "CheckpointWriteError", "CheckpointFileError", "CheckpointMismatchError", "InferenceUsage",
           "inference_usage", "load_inference_weights"]

logger = logging.getLogger(__name__)

#: names listed per kind of difference before "... and N more"
MAX_LISTED = 5


class CheckpointFileError(UserError):
    """A weights file that is missing, unreadable or not a checkpoint; the message names the file."""


class CheckpointMismatchError(UserError):
    """A checkpoint whose weights do not fit the model; the message lists the differences."""


# --------------------------------------------------------------------------------------------
# the file
# --------------------------------------------------------------------------------------------
def _shape(t) -> tuple:
    return tuple(int(s) for s in t.shape)


def _describe(obj) -> str:
    if isinstance(obj, torch.Tensor):
        return f"a single Tensor of shape {_shape(obj)}"
    if isinstance(obj, np.ndarray):
        return f"a single numpy array of shape {obj.shape}"
    if isinstance(obj, (list, tuple)):
        return f"a {type(obj).__name__} of {len(obj)} items"
    return f"a {type(obj).__module__}.{type(obj).__qualname__}"


def _looks_like_text(path: str) -> Optional[str]:
    """The file's first bytes when they are printable text (a YAML, a log, an HTML error page ...)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
        text = head.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return text if text and all(c.isprintable() or c in "\r\n\t" for c in text) else None


def _unreadable_message(path: str, e: Exception) -> str:
    """What is wrong with a file ``torch.load`` failed on (``e``), in one line naming ``path``."""
    first = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0].rstrip(".")
    size = os.path.getsize(path)
    if "PytorchStreamReader" in first or "central directory" in first or isinstance(e, EOFError) \
            or "Ran out of input" in first or "unexpected EOF" in first or "truncated" in first:
        return (f"checkpoint {path} is truncated or corrupt ({size} bytes; torch.load: {first}): "
                f"an interrupted save or copy? Use the complete file")
    text = _looks_like_text(path)
    if text is not None:
        return f"checkpoint {path} is a text file, not a PyTorch checkpoint (it starts with {text[:40]!r})"
    with open(path, "rb") as f:
        magic = f.read(1)
    if magic == b"\x80" and "magic number" in first:  # pickle protocol >= 2 header, but no torch.save framing
        return (f"checkpoint {path} is a plain pickle, not a PyTorch checkpoint written by torch.save "
                f"(torch.load: {first})")
    if isinstance(e, pickle.UnpicklingError) or "load key" in first or "unpickling" in first.lower():
        return f"checkpoint {path} is not a PyTorch checkpoint (cannot be unpickled: {first})"
    return f"checkpoint {path} cannot be read ({type(e).__name__}: {first})"


def check_checkpoint_content(path: str, checkpoint) -> dict:
    """``checkpoint`` (what ``torch.load`` gave for ``path``) if it is a FastReID checkpoint, a dict with
    the model's tensors under ``'model'``; else :class:`CheckpointFileError` saying what it holds."""
    need = "a checkpoint is a dict with the model's weights under 'model', as FastReID's trainer saves it"
    if not isinstance(checkpoint, Mapping):
        raise CheckpointFileError(f"checkpoint {path} holds {_describe(checkpoint)}, not a checkpoint: {need}")
    if "model" not in checkpoint:
        values = list(checkpoint.values())
        if values and all(isinstance(v, (torch.Tensor, np.ndarray)) for v in values):
            first = next(iter(checkpoint))
            raise CheckpointFileError(
                f"checkpoint {path} holds a bare state_dict ({len(values)} tensors, the first '{first}') without "
                f"the 'model' entry of a FastReID checkpoint: save it as {{'model': state_dict}} (ImageNet "
                f"weights of a backbone go to MODEL.BACKBONE.PRETRAIN_PATH)")
        keys = ", ".join(map(str, list(checkpoint)[:6])) or "nothing"
        raise CheckpointFileError(f"checkpoint {path} has no 'model' entry (it holds: {keys}): {need}")
    state = checkpoint["model"]
    if not isinstance(state, Mapping):
        raise CheckpointFileError(f"checkpoint {path}: its 'model' entry is {_describe(state)}, not a state_dict")
    if not state:
        raise CheckpointFileError(f"checkpoint {path}: its 'model' entry holds no weights")
    for k, v in state.items():
        if not isinstance(v, (torch.Tensor, np.ndarray)):
            raise CheckpointFileError(f"checkpoint {path}: 'model' entry {k!r} is {_describe(v)}, not a tensor")
    return checkpoint


# --------------------------------------------------------------------------------------------
# what inference uses
# --------------------------------------------------------------------------------------------
#: ops whose non-tensor result is metadata (shape, layout), not a value that depends on the weights
_METADATA = frozenset({
    "__get__", "size", "dim", "ndimension", "numel", "nelement", "stride", "storage_offset", "element_size",
    "is_contiguous", "is_floating_point", "is_complex", "is_signed", "get_device", "__len__", "data_ptr",
    "untyped_storage", "storage", "_typed_storage", "__hash__", "__repr__", "__str__", "__format__", "type",
    "has_names", "is_pinned", "is_shared", "__reduce_ex__", "__deepcopy__",
})


def _tensors(obj, out=None) -> list:
    out = [] if out is None else out
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            _tensors(o, out)
    elif isinstance(obj, Mapping):
        for o in obj.values():
            _tensors(o, out)
    return out


class _Dataflow(TorchFunctionMode):
    """Follows which named tensors (parameters, buffers) every tensor of a forward pass depends on."""

    def __init__(self, named: dict):
        super().__init__()
        self._deps = {}  # id(tensor) -> (weakref or the source tensor, frozenset of names)
        for t, names in named.values():
            self._deps[id(t)] = (t, frozenset(names))
        self._sources = set(self._deps)
        self.escaped = set()

    def deps(self, t) -> frozenset:
        entry = self._deps.get(id(t))
        if entry is None:
            return frozenset()
        ref, names = entry
        alive = ref if id(t) in self._sources else ref()
        return names if alive is t else frozenset()

    def _add(self, t, names: frozenset) -> None:
        old = self.deps(t)
        if names <= old:
            return
        ref = t if id(t) in self._sources else weakref.ref(t)
        self._deps[id(t)] = (ref, old | names)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        sets = {id(d): d for d in (self.deps(t) for t in _tensors((args, kwargs))) if d}
        if not sets:
            return out
        names = next(iter(sets.values())) if len(sets) == 1 else frozenset().union(*sets.values())
        results = _tensors(out)
        name = getattr(func, "__name__", "")
        if results:
            for t in results:
                self._add(t, names)
        elif name not in _METADATA:  # a value leaves tensor land (.item(), .tolist(), bool(...), ...)
            self.escaped |= names
        mutated = []
        if (name.endswith("_") and not name.endswith("__")) or name in ("__setitem__", "__iadd__", "__isub__",
                                                                       "__imul__", "__itruediv__", "__ior__",
                                                                       "__iand__"):
            mutated = _tensors(args[:1])
        if "out" in kwargs:
            mutated += _tensors(kwargs["out"])
        for t in mutated:  # the modified tensor, and the tensors it is a view of
            while t is not None:
                self._add(t, names)
                t = t._base
        return out


@dataclass(frozen=True)
class InferenceUsage:
    """What one inference pass used: ``used`` state_dict names its outputs depend on, ``called``
    names of the modules whose forward ran."""

    used: frozenset = field(default_factory=frozenset)
    called: frozenset = field(default_factory=frozenset)

    def covers(self, module_name: str) -> bool:
        """Whether module ``module_name`` (``""`` = the model) takes part in inference: called, or
        holding a used parameter/buffer."""
        prefix = module_name + "." if module_name else ""
        return module_name in self.called or any(n.startswith(prefix) for n in self.used)


def inference_usage(model: nn.Module, input_size: Sequence[int] = (256, 128), batch_size: int = 2) -> InferenceUsage:
    """Run ``model``'s inference once (eval mode, no grad, a fixed random batch of ``input_size``
    images) and return what it used (see the module docstring). The model's mode, weights and the
    global RNG are left as they were; exceptions of the forward propagate."""
    from .inference import inference_outputs

    named = {}  # id -> (tensor, names)
    tensors = list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers(remove_duplicate=False))
    for n, t in tensors:
        named.setdefault(id(t), (t, []))[1].append(n)
    called = set()
    handles = [m.register_forward_pre_hook(lambda mod, inp, _n=n: called.add(_n))
               for n, m in model.named_modules()]
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    h, w = (int(s) for s in input_size)
    images = torch.rand(batch_size, 3, h, w, generator=torch.Generator().manual_seed(0)).mul_(255).to(device)
    training = model.training
    flow = _Dataflow(named)
    try:
        model.eval()
        with torch.no_grad(), flow:
            out = inference_outputs(model, {"images": images})
    finally:
        model.train(training)
        for hd in handles:
            hd.remove()
    used = set(flow.escaped)
    for t in _tensors(out):
        used |= flow.deps(t)
    return InferenceUsage(frozenset(used), frozenset(called))


# --------------------------------------------------------------------------------------------
# comparing a state_dict with the model
# --------------------------------------------------------------------------------------------
@dataclass
class Misfit:
    """Differences between a checkpoint's state_dict and a model's: ``missing`` (name, model shape),
    ``unexpected`` (name, checkpoint shape), ``shapes`` (name, checkpoint shape, model shape)."""

    missing: list
    unexpected: list
    shapes: list

    def __bool__(self):
        return bool(self.missing or self.unexpected or self.shapes)

    @classmethod
    def of(cls, model: nn.Module, state: Mapping) -> "Misfit":
        model_state = model.state_dict()
        missing = set(_filter_reused_missing_keys(model, [k for k in model_state if k not in state]))
        return cls(missing=[(k, _shape(v)) for k, v in model_state.items() if k in missing],
                   unexpected=[(k, _shape(v)) for k, v in state.items() if k not in model_state],
                   shapes=[(k, _shape(v), _shape(model_state[k])) for k, v in state.items()
                           if k in model_state and _shape(v) != _shape(model_state[k])])

    def split(self, unused: Callable[[str, str], bool]) -> tuple:
        """``(blocking, tolerated)`` Misfits: an entry is tolerated when ``unused(name, kind)``."""
        parts = ([], []), ([], []), ([], [])
        for entries, (keep, drop), kind in zip((self.missing, self.unexpected, self.shapes), parts,
                                               ("missing", "unexpected", "shapes")):
            for e in entries:
                (drop if unused(e[0], kind) else keep).append(e)
        return Misfit(*(p[0] for p in parts)), Misfit(*(p[1] for p in parts))

    def names(self) -> list:
        return [e[0] for e in self.missing + self.unexpected + self.shapes]

    @staticmethod
    def _listed(items: list, limit: int = MAX_LISTED) -> str:
        more = f", ... and {len(items) - limit} more" if len(items) > limit else ""
        return ", ".join(items[:limit]) + more

    def describe(self, limit: int = MAX_LISTED, shapes: bool = True) -> str:
        """One line: each non-empty kind with its count and its first ``limit`` entries."""
        parts = []
        if self.missing:
            items = [f"{k} {s}" if shapes else k for k, s in self.missing]
            parts.append(f"{len(self.missing)} missing from the checkpoint: {self._listed(items, limit)}")
        if self.unexpected:
            items = [f"{k} {s}" if shapes else k for k, s in self.unexpected]
            parts.append(f"{len(self.unexpected)} unexpected (not in the model): {self._listed(items, limit)}")
        if self.shapes:
            items = [f"{k}: checkpoint {c}, model {m}" if shapes else k for k, c, m in self.shapes]
            parts.append(f"{len(self.shapes)} with another shape: {self._listed(items, limit)}")
        return "; ".join(parts)

    def grouped_names(self) -> str:
        """Compact names for a note: per module, indices as ``*`` (``heads.pfn.classifiers.*.{weight, bias}``)."""
        groups = {}
        for name in self.names():
            parts = name.split(".")
            head = ".".join("*" if p.isdigit() else p for p in parts[:-1])
            tails = groups.setdefault(head, [])
            if parts[-1] not in tails:
                tails.append(parts[-1])
        return ", ".join((f"{h}." if h else "") + (t[0] if len(t) == 1 else "{" + ", ".join(t) + "}")
                         for h, t in groups.items())


def _owner(model_modules: dict, key: str) -> str:
    """The deepest module of the model on the path of state_dict key ``key``."""
    parts = key.split(".")[:-1]
    while parts and ".".join(parts) not in model_modules:
        parts.pop()
    return ".".join(parts)


# --------------------------------------------------------------------------------------------
# the checkpointer
# --------------------------------------------------------------------------------------------
class CheckpointWriteError(OSError):
    """A checkpoint (or ``last_checkpoint``) could not be written; the previous ones are intact."""


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


class SafeCheckpointer(Checkpointer):
    """FastReID's Checkpointer with atomic saves, a resume fallback, file checks and fit checks
    (strict on resume, inference-aware for evaluation, lenient with one summary line for fine-tuning).

    ``ExtTrainer`` turns FastReID's Checkpointer instance into this class after construction, so it
    keeps no state of its own beyond what each load sets."""

    # ---------------------------------------------------------------- saving
    def save(self, name: str, **kwargs):
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        tmp = save_file + ".tmp"
        try:
            with open(tmp, "wb") as f:
                torch.save(data, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, save_file)
        except OSError as e:  # full disk, quota, folder removed: keep what was there, say so
            _remove_quietly(tmp)
            previous = self.get_checkpoint_file() if self.has_checkpoint() else "none"
            raise CheckpointWriteError(
                f"could not write checkpoint {save_file}: {e.strerror or e}. Nothing was replaced: "
                f"last_checkpoint still names {previous}; free space (or fix OUTPUT_DIR) and --resume") from e
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str):
        path = os.path.join(self.save_dir, "last_checkpoint")
        try:
            with open(path + ".tmp", "w") as f:
                f.write(last_filename_basename)
                f.flush()
                os.fsync(f.fileno())
            os.replace(path + ".tmp", path)
        except OSError as e:
            _remove_quietly(path + ".tmp")
            raise CheckpointWriteError(f"could not update {path} to {last_filename_basename}: {e.strerror or e}; "
                                       "it still names the previous checkpoint") from e

    # ---------------------------------------------------------------- loading: entry points
    def resume_candidates(self) -> list[str]:
        """The tagged last checkpoint first, then every other ``.pth`` file, newest first."""
        last = self.get_checkpoint_file() if self.has_checkpoint() else ""
        others = sorted((p for p in self.get_all_checkpoint_files() if p != last),
                        key=os.path.getmtime, reverse=True)
        return ([last] if last else []) + others

    def resume_or_load(self, path: str, *, resume: bool = True):
        """``--resume`` with a checkpoint in ``save_dir``: load the newest readable one (model, optimizer,
        scheduler), which must fit the model exactly. Otherwise fine-tune from ``path`` (MODEL.WEIGHTS;
        lenient, one summary line)."""
        if not (resume and self.has_checkpoint()):
            return self._load_as("finetune", path, checkpointables=[])
        failures = []
        for candidate in self.resume_candidates():
            try:
                checkpoint = self._load_as("resume", candidate)
            except CheckpointMismatchError:
                raise  # another model's run: an older checkpoint of it does not fit either
            except Exception as e:  # noqa: BLE001 - any unreadable file means "try the previous one"
                failures.append(f"{candidate}: {type(e).__name__}: {e}")
                self.logger.error("checkpoint %s is unreadable (%s); trying the previous one", candidate, e)
                continue
            if failures:
                self.logger.warning("resumed from %s because newer checkpoints were unreadable", candidate)
            return checkpoint
        raise CheckpointFileError(f"--resume: no readable checkpoint in {self.save_dir}: " + "; ".join(failures))

    def load_for_inference(self, path: str, *, input_size: Sequence[int] = (256, 128),
                           probe: Optional[Callable[[], nn.Module]] = None):
        """Load ``path`` for evaluation: an error unless the checkpoint fits the model, except for
        parameters inference does not use (module docstring), which are reported in one warning line.
        ``input_size``: (H, W) of the dummy batch; ``probe``: builds the same model with identity
        classes, to judge checkpoint keys the model lacks. Returns the checkpoint's other entries."""
        if not path:
            raise CheckpointFileError("no weights to load: set MODEL.WEIGHTS path/to/model.pth")
        self._inference_args = (tuple(input_size), probe)
        return self._load_as("inference", path, checkpointables=[])

    def load(self, path: str, checkpointables=None):
        """FastReID's ``load`` after checking that ``path`` is a file (URLs are fetched as FastReID
        does). How the weights must fit depends on the entry point; a plain ``load`` is lenient."""
        if not path:
            return super().load(path, checkpointables)
        local = path
        if not os.path.isfile(local):
            try:
                local = self.path_manager.get_local_path(path)
            except Exception:  # noqa: BLE001 - not a URL FastReID can fetch: report the file
                local = path
        if os.path.isdir(local):
            raise CheckpointFileError(f"checkpoint {path} is a directory, not a checkpoint file")
        if not os.path.isfile(local):
            raise CheckpointFileError(f"checkpoint file not found: {path}")
        self._path = path
        return super().load(local, checkpointables)

    def _load_as(self, mode: str, path: str, checkpointables=None):
        self._mode = mode
        try:
            return self.load(path, checkpointables)
        finally:
            self._mode = "finetune"
            self._inference_args = None

    # ---------------------------------------------------------------- loading: FastReID's hooks
    def _load_file(self, f: str):
        """The patched reader (compat P8: ``weights_only`` with the legacy fallback), with every way a
        file can be unusable turned into a :class:`CheckpointFileError` naming it."""
        path = getattr(self, "_path", None) or f
        if os.path.getsize(f) == 0:
            raise CheckpointFileError(f"checkpoint {path} is empty (0 bytes)")
        try:
            checkpoint = super()._load_file(f)
        except Exception as e:  # noqa: BLE001 - whatever torch.load / pickle raise: the file is unusable
            raise CheckpointFileError(_unreadable_message(f, e).replace(f, path, 1)) from e
        return check_checkpoint_content(path, checkpoint)

    def _load_model(self, checkpoint):
        state = checkpoint.pop("model")
        self._convert_ndarray_to_tensor(state)
        _strip_prefix_if_present(state, "module.")
        path = getattr(self, "_path", "?")
        mode = getattr(self, "_mode", "finetune")
        fit = getattr(self.model, "match_checkpoint_shapes", None)
        if fit is not None:  # parameters sized by the data (MMT's classifiers: one row per cluster of the epoch)
            fit(state)
        misfit = Misfit.of(self.model, state)
        if misfit and mode == "resume":
            raise CheckpointMismatchError(
                f"checkpoint {path} does not fit the model ({type(self.model).__name__}): {misfit.describe()}. "
                f"--resume continues the run in OUTPUT_DIR with the model it was trained with: use that config, "
                f"or another OUTPUT_DIR for a new run")
        if misfit and mode == "inference":
            self._check_for_inference(path, misfit, state)
        for k, _, _ in misfit.shapes:
            state.pop(k)
        self.model.load_state_dict(state, strict=False)
        if mode == "finetune":
            self._summarise_finetune(path, misfit, len(self.model.state_dict()))
        return None  # FastReID's per-key logging is replaced by the lines above

    def _log_incompatible_keys(self, incompatible) -> None:  # noqa: D102 - see _load_model
        return None

    # ---------------------------------------------------------------- fit rules
    def _check_for_inference(self, path: str, misfit: Misfit, state: Mapping) -> None:
        input_size, probe = getattr(self, "_inference_args", None) or ((256, 128), None)
        why_unknown = ""
        try:
            usage = inference_usage(self.model, input_size)
        except Exception as e:  # noqa: BLE001 - cannot tell: every difference counts
            usage = None
            first = (str(e).strip().splitlines() or [""])[0]
            why_unknown = (f" (which parameters inference uses is unknown: the model failed on a dummy "
                           f"{tuple(input_size)} batch: {type(e).__name__}: {first})")
        modules = dict(self.model.named_modules())
        probe_usage = None

        def unused(name: str, kind: str) -> bool:
            nonlocal probe_usage
            if usage is None:
                return False
            if kind != "unexpected":
                return name not in usage.used
            if not usage.covers(_owner(modules, name)):
                return True
            if probe is None:
                return False
            if probe_usage is None:
                probe_usage = _probe_usage(probe, input_size)
            keys, used = probe_usage
            return name in keys and name not in used

        blocking, tolerated = misfit.split(unused)
        if blocking:
            also = (f" ({len(tolerated.names())} more differ only in parameters inference does not use)"
                    if tolerated else "")
            raise CheckpointMismatchError(
                f"checkpoint {path} does not fit the model ({type(self.model).__name__}): {blocking.describe()}"
                f"{also}{why_unknown}. Were these weights trained with this config (MODEL.BACKBONE.DEPTH, "
                f"MODEL.META_ARCHITECTURE, heads)?")
        self.logger.warning(
            "checkpoint %s: %d parameters that inference does not use differ from the model and are left "
            "as built (identity classifiers, training-only weights): %s", path, len(tolerated.names()),
            tolerated.grouped_names())

    def _summarise_finetune(self, path: str, misfit: Misfit, total: int) -> None:
        if not misfit:
            self.logger.info("fine-tuning from %s: all %d model tensors loaded", path, total)
            return
        loaded = total - len(misfit.missing) - len(misfit.shapes)
        listed = lambda items: Misfit._listed(items, 3)  # noqa: E731
        self.logger.warning(
            "fine-tuning from %s: loaded %d of %d model tensors; skipped %d missing (not in the checkpoint, "
            "kept as initialised%s), %d unexpected (not in the model, ignored%s), %d with another shape "
            "(kept as initialised%s)", path, loaded, total,
            len(misfit.missing), (": " + listed([k for k, _ in misfit.missing])) if misfit.missing else "",
            len(misfit.unexpected), (": " + listed([k for k, _ in misfit.unexpected])) if misfit.unexpected else "",
            len(misfit.shapes),
            (": " + listed([f"{k} {c} vs {m}" for k, c, m in misfit.shapes])) if misfit.shapes else "")


def _probe_usage(probe: Callable[[], nn.Module], input_size) -> tuple:
    """``(state_dict keys, used keys)`` of the probe model, or empty sets when it cannot be built/run."""
    try:
        with torch.random.fork_rng(devices=[]):
            model = probe()
        return set(model.state_dict()), inference_usage(model, input_size).used
    except Exception as e:  # noqa: BLE001 - no probe: keys the model lacks stay differences
        logger.debug("probe model failed: %s", e)
        return set(), set()


def load_inference_weights(model: nn.Module, cfg, path: Optional[str] = None):
    """Load ``path`` (default ``cfg.MODEL.WEIGHTS``) into ``model`` for evaluation (``--eval-only``, the
    tools): :meth:`SafeCheckpointer.load_for_inference` with a dummy batch of ``INPUT.SIZE_TEST`` and,
    for a model built without identity classes, the same config with classes as the probe."""
    path = cfg.MODEL.WEIGHTS if path is None else path
    probe = None
    if int(cfg.MODEL.HEADS.NUM_CLASSES) == 0:
        def probe():
            from fastreid.modeling.meta_arch import build_model

            pcfg = cfg.clone()
            pcfg.defrost()
            pcfg.MODEL.HEADS.NUM_CLASSES = 2
            pcfg.MODEL.BACKBONE.PRETRAIN = False
            pcfg.MODEL.DEVICE = "cpu"
            return build_model(pcfg)
    return SafeCheckpointer(model).load_for_inference(path, input_size=cfg.INPUT.SIZE_TEST, probe=probe)
