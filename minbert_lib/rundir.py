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
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

from .errors import MinbertError, WriteError

DONE_FILE = "done.json"  # also read by experiments.run_row to tell whether a call trained the run


def _cause(e: BaseException) -> str:
    return e.strerror if isinstance(e, OSError) and e.strerror else str(e)


def atomic_write(path: Path, write, binary: bool = False, what: str = "file") -> None:
    """Write `path` through a temporary file beside it: `write(f)` fills the open file, which
    then replaces `path` in one rename. On failure (a full disk, no permission) the temporary
    file is removed, `path` keeps its previous content, and a WriteError names both."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb" if binary else "w") as f:
            write(f)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise WriteError(f"could not write the {what} {path}: {_cause(e)}; free some space or make "
                         f"{path.parent} writable, then run the command again") from None
    except BaseException:  # an interruption or a bug: still no temporary file left behind
        tmp.unlink(missing_ok=True)
        raise


def atomic_save(obj, path: Path) -> None:
    """torch.save to `path` through a temporary file (never a half-written checkpoint). torch.save
    is given an open file so that a write error surfaces as the OSError it is (given a path, torch
    reports a full disk as an 'inline_container.cc' RuntimeError)."""
    atomic_write(path, lambda f: torch.save(obj, f), binary=True, what="checkpoint")


def atomic_write_text(path: Path, text: str, what: str = "file") -> None:
    atomic_write(path, lambda f: f.write(text), what=what)


def check_writable(folder: Path, what: str, hint: str = "") -> None:
    """Create `folder` and a file in it now, so a run fails before training, not after."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise WriteError(f"the {what} {folder} is not writable ({_cause(e)}); make it writable"
                         + (f" or {hint}" if hint else "")) from None


def read_json(path: Path, action: str):
    """json.loads of a file the library wrote; a damaged one is a MinbertError naming it."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:  # ValueError: JSONDecodeError and UnicodeDecodeError
        raise MinbertError(f"{path} cannot be read as JSON ({e}); {action}") from None


@contextmanager
def atomic_folder(out: Path):
    """Yield an empty temporary folder beside `out`; when the block ends normally it replaces
    `out` (all of its files at once), otherwise it is deleted and `out` is left as it was."""
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as e:
        raise WriteError(f"could not create a folder beside {out}: {_cause(e)}") from None
    old = out.with_name(f".{out.name}.old")
    try:
        yield tmp
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            os.replace(out, old)
        try:
            os.replace(tmp, out)
        except OSError:
            if old.exists():
                os.replace(old, out)  # put the previous folder back
            raise
        shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        raise WriteError(f"could not write {out}: {_cause(e)}; nothing in it was changed. Free some "
                         f"space or make {out.parent} writable, then run the command again") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class RunDirConflict(MinbertError, ValueError):
    """A run folder that cannot serve this run (other settings, more epochs than asked, or an
    unreadable file)."""


class CorruptRunFile(RunDirConflict):
    """done.json, last.pt or best.pt of a run folder cannot be read (truncated, not JSON).
    `problem` names the file and the cause, `action` what to do: experiments.run_row replaces
    it with how to discard that seed alone."""

    def __init__(self, problem: str, path: Path, action: str):
        super().__init__(f"{problem}. {action}")
        self.problem, self.path = problem, Path(path)


def _corrupt(path: Path, folder: Path, e: BaseException) -> CorruptRunFile:
    first = str(e).splitlines()[0].split(". ")[0] if str(e) else ""  # torch's messages run on for lines
    cause = f"{type(e).__name__}: {first}".rstrip(": ")
    return CorruptRunFile(f"{path} cannot be read ({cause}); it may be truncated by an interrupted write or a "
                          "full disk", path, f"Delete the folder {folder} to train this run again")


def _load(path: Path, folder: Path, **kwargs):
    try:
        return torch.load(path, **kwargs)
    except Exception as e:  # truncated zip, unpickling error, EOF: the file, not the code, is broken
        raise _corrupt(path, folder, e) from None


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
        try:
            record = json.loads(self.done_path.read_text())
            if not isinstance(record, dict):
                raise ValueError(f"a JSON {type(record).__name__}, not an object")
        except (ValueError, OSError) as e:
            raise _corrupt(self.done_path, self.path, e) from None
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
        ckpt = _load(self.last_path, self.path, map_location=self.device, weights_only=False)
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
        return _load(self.best_path, self.path, map_location=self.device) if self.best_path.is_file() else None

    def finish(self, record: dict, keep_last: bool = True) -> None:
        """Write done.json; `keep_last=False` deletes last.pt (the run cannot be extended then)."""
        atomic_write_text(self.done_path, json.dumps({**record, "fingerprint": self.fingerprint}), what="run record")
        if not keep_last:
            self.last_path.unlink(missing_ok=True)
