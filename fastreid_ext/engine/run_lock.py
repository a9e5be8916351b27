"""One training run per ``OUTPUT_DIR`` at a time, and an ``OUTPUT_DIR`` checked before any work.

Two runs writing checkpoints, ``metrics.json`` and ``last_checkpoint`` into the same folder corrupt each
other's results silently. :class:`OutputDirLock` takes ``<OUTPUT_DIR>/.run.lock`` (created atomically with
``O_CREAT | O_EXCL``, holding the owner's pid, host and start time) before the run writes anything:

* the folder is created and must be writable: an unwritable ``OUTPUT_DIR`` (or a full disk) fails
  here, at start, with a message naming the folder, not at the first checkpoint hours later;
* a lock whose owner is alive (same host, pid running) makes the second run refuse, naming the owner;
* a lock whose owner is dead (a run killed with SIGKILL, a crashed machine) is taken over with a
  warning: this is how ``--resume`` of an interrupted run proceeds;
* a lock from another host cannot be checked: refused, with the path to delete if that run is gone.

The lock is released when the run ends (normally or by an exception) and at interpreter exit; only the
main process of a multi-process run takes it.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import time

from ..errors import UserError

logger = logging.getLogger(__name__)

__all__ = ["LOCK_NAME", "OutputDirBusy", "OutputDirLock", "OutputDirNotWritable", "check_writable"]

LOCK_NAME = ".run.lock"


class OutputDirBusy(UserError):
    """Another live run owns the output folder."""


class OutputDirNotWritable(UserError):
    """The output folder cannot be created or written."""


def check_writable(output_dir: str) -> None:
    """Create ``output_dir`` if needed and check that a file can be written there (raises
    :class:`OutputDirNotWritable`, naming the folder and the reason: permissions, full disk, ...)."""
    try:
        os.makedirs(output_dir, exist_ok=True)
        probe = os.path.join(output_dir, f".write-test-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
            f.flush()
            os.fsync(f.fileno())
        os.remove(probe)
    except OSError as e:
        raise OutputDirNotWritable(f"OUTPUT_DIR {output_dir} is not writable: {e.strerror or e}") from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputDirLock:
    """``<output_dir>/.run.lock`` for the lifetime of one training run (see the module docstring)."""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.path = os.path.join(output_dir, LOCK_NAME)
        self.held = False

    def _owner(self) -> dict:
        try:
            with open(self.path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def acquire(self) -> "OutputDirLock":
        check_writable(self.output_dir)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                pid, host = owner.get("pid"), owner.get("host")
                if host == me["host"] and isinstance(pid, int) and pid != me["pid"] and not _alive(pid):
                    logger.warning("OUTPUT_DIR %s was locked by run pid %s (started %s), which is no longer "
                                   "running; taking the lock over", self.output_dir, pid, owner.get("started"))
                    try:
                        os.remove(self.path)
                    except FileNotFoundError:
                        pass
                    continue
                if host == me["host"] and pid == me["pid"]:
                    self.held = True
                    return self
                where = (f"pid {pid} on this machine" if host == me["host"] else
                         f"pid {pid} on host {host} (cannot be checked from here; delete {self.path} if that run "
                         "is gone)") if owner else f"an unreadable lock file {self.path}"
                raise OutputDirBusy(f"OUTPUT_DIR {self.output_dir} is in use by another training run ({where}, "
                                    f"started {owner.get('started', '?')}); use another OUTPUT_DIR or wait for it "
                                    "to finish")
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            atexit.register(self.release)
            return self
        raise OutputDirBusy(f"could not take the lock {self.path}: it keeps being re-created")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        owner = self._owner()
        if owner.get("pid") == os.getpid():
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
