"""User errors versus bugs: what the command-line tools report in one line and what they let raise.

A **user error** is a mistake in what the user gave the program: the config (an unknown key or value,
an impossible setting), a dataset, model, backbone or loss name, a file (missing dataset folder,
missing / truncated / foreign weights file), or weights that do not fit the configured model.
``tools/train_net.py`` prints it as ONE line on stderr, ``error: <message>``, and exits with status 2
(argparse's status for a bad command line), without a traceback. ``--debug`` or the environment
variable ``FASTREID_EXT_DEBUG=1`` shows the full traceback instead. Everything else is a **bug** and
raises normally, with its traceback.

The rule (:func:`is_user_error`): an exception is a user error when

1. it is a :class:`UserError` (raised anywhere; the checkpoint checks of
   :mod:`fastreid_ext.engine.checkpoint` raise its subclasses), or
2. it is one of :data:`USER_ERROR_TYPES` (``ValueError``, ``KeyError``, ``FileNotFoundError``,
   ``NotADirectoryError``, ``IsADirectoryError``, ``PermissionError``) and was raised inside a
   :func:`user_input` block: the phases that only turn the user's input into objects - reading and
   checking the config, building the datasets and loaders, building the model (and the optimizer and
   scheduler, from the config), loading weights. ``tools/train_net.py`` marks these phases; the
   project's own modules keep raising plain ``ValueError`` / ``KeyError`` / ``FileNotFoundError``
   with their messages (library callers and their tests see the same exceptions as before) and
   ``ExtTrainer.build_train_loader`` / ``build_test_loader`` mark dataset building wherever it
   happens (also the test set built by the evaluation hook at the end of training).

The same types raised outside these phases (in the training loop, the evaluator, a loss) are bugs.
A bug inside a phase that happens to raise one of these types is reported as a user error: its one
line still names the phase, and ``--debug`` shows where it came from. ``UserError`` subclasses
``ValueError``, so ``except ValueError`` / ``pytest.raises(ValueError)`` keep catching it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable

__all__ = ["UserError", "USER_ERROR_TYPES", "user_input", "is_user_error", "user_message", "debug_requested",
           "run_cli", "DEBUG_ENV"]

#: environment variable that makes the tools show tracebacks of user errors (like ``--debug``)
DEBUG_ENV = "FASTREID_EXT_DEBUG"

#: exception types that count as user errors when raised inside a :func:`user_input` phase
USER_ERROR_TYPES = (ValueError, KeyError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)

_PHASE_ATTR = "_fastreid_ext_user_input_phase"


class UserError(ValueError):
    """A mistake in the user's input (config, names, files, weights), with a message that says what
    and where. The tools print it as one ``error:`` line; a ``ValueError`` for everyone else."""


@contextlib.contextmanager
def user_input(phase: str):
    """Mark a block that turns user input into objects (``phase``: what it does, e.g. "reading the
    config"). An exception of :data:`USER_ERROR_TYPES` leaving it is re-raised unchanged (same type,
    same traceback), tagged as a user error of that phase; the innermost phase wins. Usable as a
    decorator too."""
    try:
        yield
    except USER_ERROR_TYPES as e:
        if getattr(e, _PHASE_ATTR, None) is None:
            try:
                setattr(e, _PHASE_ATTR, phase)
            except AttributeError:  # an exception type without __dict__ stays a bug
                pass
        raise


def is_user_error(exc: BaseException) -> bool:
    """The rule of this module: a :class:`UserError`, or one of :data:`USER_ERROR_TYPES` raised inside
    a :func:`user_input` phase."""
    return isinstance(exc, UserError) or (isinstance(exc, USER_ERROR_TYPES)
                                          and getattr(exc, _PHASE_ATTR, None) is not None)


def user_message(exc: BaseException) -> str:
    """The one-line message of a user error: the exception's own message (``KeyError``'s without the
    quotes its ``str()`` adds), on one line. A bare name (e.g. ``KeyError('19x')`` from a lookup
    table) gets the phase it came from, so the line still says what went wrong."""
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        msg = exc.args[0]
    else:
        msg = str(exc)
    msg = " ".join(part.strip() for part in msg.strip().splitlines() if part.strip())
    phase = getattr(exc, _PHASE_ATTR, None)
    if not isinstance(exc, UserError) and phase and (not msg or " " not in msg):
        msg = f"{phase}: {type(exc).__name__} {msg!r}" if msg else f"{phase}: {type(exc).__name__}"
    return msg or type(exc).__name__


def debug_requested(flag: bool = False) -> bool:
    """``--debug`` given, or ``FASTREID_EXT_DEBUG`` set to something other than ``""``/``0``/``false``."""
    env = os.environ.get(DEBUG_ENV, "").strip().lower()
    return bool(flag) or env not in ("", "0", "false", "no", "off")


def run_cli(fn: Callable[[], object], *, debug: bool = False, stream=None) -> int:
    """Run a tool's body ``fn()``: 0 when it returns; for a user error print ``error: <message>`` (one
    line, on ``stream`` = stderr) and return 2, unless debugging (then it raises with its traceback).
    Bugs always raise. Use as ``sys.exit(run_cli(lambda: main(args), debug=args.debug))``."""
    if debug_requested(debug):
        fn()
        return 0
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the rule decides; everything else re-raises
        if not is_user_error(e):
            raise
        print(f"error: {user_message(e)}", file=stream or sys.stderr, flush=True)
        return 2
    return 0
