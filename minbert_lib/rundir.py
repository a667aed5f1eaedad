"""A training run's folder: what lets an interrupted run resume and a finished one be reused.

Both training loops (`train.fit`, one task; `multitask.train_multitask`) keep three files in
their `run_dir`:

- `last.pt`: everything needed to continue (trainable weights, optimizer, RNG states,
  history), rewritten after every epoch (and, in the multitask loop, every few minutes);
- `best.pt`: the trainable weights of the best dev epoch so far;
- `done.json`: the finished run's result.

(`experiments.run_row` adds `commits.txt` beside them: the commits of the code that trained the run.)

Every file carries the run's *fingerprint* (task or schedule, learning rate, batch size, seed,
data sizes, ...). A folder written with other settings is refused with a message saying so,
rather than silently continued. Files are written to a temporary name and renamed, so an
interruption while saving leaves the previous file intact. Chapter 5 interrupts a run and
resumes it (through `train.fit`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

DONE_FILE = "done.json"  # also read by experiments.run_row to tell whether a call trained the run


def atomic_save(obj, path: Path) -> None:
    """torch.save to `path` through a temporary file (never a half-written checkpoint)."""
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class RunDirConflict(ValueError):
    """A run folder that cannot serve this run (other settings, or more epochs than asked)."""


class RunDir:
    """`may_differ`: fingerprint keys a saved run may differ in and still be continued (e.g.
    "epochs" where nothing in an epoch depends on the total: a finished run then continues to
    more epochs instead of training again)."""

    def __init__(self, path, fingerprint: dict, device=None, may_differ: tuple = ()):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.fingerprint = fingerprint
        self.device = device
        self.may_differ = tuple(may_differ)
        self.last_path = self.path / "last.pt"
        self.best_path = self.path / "best.pt"
        self.done_path = self.path / DONE_FILE

    def _matches(self, found) -> bool:
        def strip(fp):
            return {k: v for k, v in fp.items() if k not in self.may_differ} if isinstance(fp, dict) else fp

        return strip(found) == strip(self.fingerprint)

    def finished(self) -> dict | None:
        """The finished run's record (without its fingerprint), or None if it has not finished."""
        if not self.done_path.is_file():
            return None
        record = json.loads(self.done_path.read_text())
        found = record.pop("fingerprint", None)
        if not self._matches(found):
            raise RunDirConflict(f"{self.path} holds a finished run with other settings ({found}, now "
                             f"{self.fingerprint}); delete it or use another run_dir")
        return record

    def finished_run(self, epochs: int) -> dict | None:
        """The finished run's record if it ran `epochs` epochs. None when there is nothing to
        return: no finished run, or one of fewer epochs whose last.pt it continues from."""
        record = self.finished()
        if record is None:
            return None
        done = len(record["history"])
        if done > epochs:
            raise RunDirConflict(f"{self.path} holds a run of {done} epochs; asked for {epochs}")
        if done < epochs:
            if self.last_path.is_file():
                return None  # continue from its last epoch
            raise RunDirConflict(f"{self.path} finished {done} epochs and has no last.pt to continue from; "
                             "delete it to train again")
        return record

    def last(self) -> dict | None:
        """The state saved by `save_last`, or None when there is nothing to resume."""
        if not self.last_path.is_file():
            return None
        ckpt = torch.load(self.last_path, map_location=self.device, weights_only=False)
        if not self._matches(ckpt.get("fingerprint")):
            raise RunDirConflict(f"{self.last_path} was written with other settings ({ckpt.get('fingerprint')}, now "
                             f"{self.fingerprint}); delete {self.path} to start again")
        return ckpt

    def save_last(self, state: dict) -> None:
        atomic_save({**state, "fingerprint": self.fingerprint}, self.last_path)

    def save_best(self, weights: dict) -> None:
        atomic_save(weights, self.best_path)

    def best(self) -> dict | None:
        """The best epoch's trainable weights, or None if none was saved."""
        return torch.load(self.best_path, map_location=self.device) if self.best_path.is_file() else None

    def finish(self, record: dict, keep_last: bool = True) -> None:
        """Write done.json; `keep_last=False` deletes last.pt (the run cannot be extended then)."""
        tmp = self.done_path.with_name("done.json.tmp")
        tmp.write_text(json.dumps({**record, "fingerprint": self.fingerprint}))
        os.replace(tmp, self.done_path)
        if not keep_last:
            self.last_path.unlink(missing_ok=True)
