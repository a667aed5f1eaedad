"""Colab as its users meet it: the install line every chapter's first cell runs, and run
folders on Google Drive so that a disconnected runtime resumes where it stopped.

- `install_line()`: `pip install` of this library from `minbert_lib.REPOSITORY` at the tag
  `v{__version__}`. Those two names (in `minbert_lib/__init__.py`) are the one setting to change
  when the book is published; `python -m minbert_lib.colab sync` writes the line into every
  chapter, and tests/test_colab.py fails when a chapter or `_config.yml` disagrees.
- `use_drive(folder)`: mounts Google Drive and sets `MINBERT_RUN_DIR` to a folder on it, so
  the runner's results/ and checkpoints/ live there (experiments.results_dir, checkpoints_dir).
  From a shell: `MINBERT_RUN_DIR=/content/drive/MyDrive/minbert python -m minbert_lib.experiments ...`.
Used by every chapter's first cell and the README's Colab section.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from . import REPOSITORY, __version__

INSTALL_MARK = "!pip install -q "


def install_line() -> str:
    return f'{INSTALL_MARK}"minbert_lib @ git+{REPOSITORY}@v{__version__}"'


def use_drive(folder: str = "MyDrive/minbert", mount_point: str = "/content/drive") -> Path:
    """On Colab: mount Google Drive and keep results and checkpoints in `folder` on it."""
    from google.colab import drive  # only on Colab

    drive.mount(mount_point)
    run_dir = Path(mount_point) / folder
    run_dir.mkdir(parents=True, exist_ok=True)
    os.environ["MINBERT_RUN_DIR"] = str(run_dir)
    print(f"results and checkpoints in {run_dir} (MINBERT_RUN_DIR): a new runtime resumes from there")
    return run_dir


def sync_notebooks(folder: Path) -> list[Path]:
    """Rewrite the install line of every chapter's first code cell; returns the notebooks changed."""
    changed = []
    for path in sorted(Path(folder).glob("*.ipynb")):
        nb = json.loads(path.read_text())
        cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
        lines = "".join(cell["source"]).split("\n")
        new = [ln[: ln.index(INSTALL_MARK)] + install_line() if INSTALL_MARK in ln else ln for ln in lines]
        if new != lines:
            text = "\n".join(new)
            cell["source"] = [ln + "\n" for ln in text.split("\n")[:-1]] + [text.split("\n")[-1]]
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
            changed.append(path)
    return changed


if __name__ == "__main__":
    if sys.argv[1:] != ["sync"]:
        print("usage: python -m minbert_lib.colab sync  (writes the install line into notebooks/*.ipynb)",
              file=sys.stderr)
        sys.exit(2)
    root = Path(__file__).resolve().parents[1]
    for p in sync_notebooks(root / "notebooks"):
        print(f"updated {p}")
