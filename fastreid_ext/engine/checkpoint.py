"""Checkpointing that never loses finished work.

* saves are atomic (write ``<name>.pth.tmp``, then rename), so a crash mid-save leaves the previous
  checkpoint and ``last_checkpoint`` intact;
* ``--resume`` on a folder whose last checkpoint is unreadable (truncated, corrupt) falls back to
  the newest readable one and says so, instead of failing or silently starting from scratch.
"""

from __future__ import annotations

import os

import torch
from fastreid.utils.checkpoint import Checkpointer


class SafeCheckpointer(Checkpointer):
    """FastReID's Checkpointer with atomic saves and a resume fallback."""

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
        with open(tmp, "wb") as f:
            torch.save(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, save_file)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str):
        path = os.path.join(self.save_dir, "last_checkpoint")
        with open(path + ".tmp", "w") as f:
            f.write(last_filename_basename)
        os.replace(path + ".tmp", path)

    def resume_candidates(self) -> list[str]:
        """The tagged last checkpoint first, then every other ``.pth`` file, newest first."""
        last = self.get_checkpoint_file() if self.has_checkpoint() else ""
        others = sorted((p for p in self.get_all_checkpoint_files() if p != last),
                        key=os.path.getmtime, reverse=True)
        return ([last] if last else []) + others

    def resume_or_load(self, path: str, *, resume: bool = True):
        if not (resume and self.has_checkpoint()):
            return self.load(path, checkpointables=[])
        failures = []
        for candidate in self.resume_candidates():
            try:
                checkpoint = self.load(candidate)
            except Exception as e:  # noqa: BLE001 - any unreadable file means "try the previous one"
                failures.append(f"{candidate}: {type(e).__name__}: {e}")
                self.logger.error("checkpoint %s is unreadable (%s); trying the previous one", candidate, e)
                continue
            if failures:
                self.logger.warning("resumed from %s because newer checkpoints were unreadable", candidate)
            return checkpoint
        raise RuntimeError(f"--resume: no readable checkpoint in {self.save_dir}:\n  " + "\n  ".join(failures))
