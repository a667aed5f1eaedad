"""The library's one user-facing error type, and how the command lines report it.

Anything a user can get wrong (a missing data folder, a malformed task file, a broken
checkpoint, an unknown profile or row, a full disk) raises a subclass of `MinbertError` whose
message says what was wrong, names the path, and says what to do. Each command's `main`
runs through `run_command`, which turns such an error into ONE line on stderr,
`error: <message>`, and exit status 2 (argparse's own status for bad usage), without a
traceback. Anything else is a bug in the library and keeps its traceback.

The specific errors keep their older base classes too (`DataError` is a RuntimeError,
`CheckpointError` a FileNotFoundError, ...) so that code catching those still works.
"""
from __future__ import annotations

import argparse
import sys

EXIT_USAGE = 2  # what argparse exits with on bad usage; every command uses it for every bad input


class MinbertError(Exception):
    """A problem with the user's input or environment; the message says what to do."""


class UsageError(MinbertError, ValueError):
    """A bad command-line argument or call argument (unknown profile, empty --rows, ...)."""


class UnknownName(UsageError, KeyError):
    """An unknown table, row or schedule (a KeyError, as the registries raised before)."""

    def __str__(self) -> str:  # KeyError's str() would quote the whole message
        return str(self.args[0]) if self.args else ""


class WriteError(MinbertError, OSError):
    """A file or folder could not be written (full disk, no permission); nothing half-written is left."""


def one_line(error: BaseException) -> str:
    """The error's message on one line (messages that list several things are joined)."""
    text = error.args[0] if len(error.args) == 1 and isinstance(error.args[0], str) else str(error)
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def report(error: BaseException, stream=None) -> int:
    """Print `error: <message>` as one line on stderr; return the exit status."""
    print(f"error: {one_line(error)}", file=stream or sys.stderr)
    return EXIT_USAGE


def run_command(main, argv=None) -> int:
    """Run a command's `main(argv)`; a MinbertError becomes one `error:` line and exit 2."""
    try:
        return main(argv)
    except MinbertError as e:
        return report(e)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is a UsageError (one `error:` line, like every other bad
    input) instead of a usage block; `--help` still shows the usage."""

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


def positive_int(text: str) -> int:
    """argparse type for counts such as --threads: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def seed_list(seeds, option: str = "--seeds"):
    """Check a list of seeds given on the command line: non-empty, >= 0, no repeats."""
    if seeds is None:
        return None
    if not seeds:
        raise UsageError(f"{option} was given without any seed; name at least one, e.g. {option} 0 1 2")
    negative = [s for s in seeds if s < 0]
    if negative:
        raise UsageError(f"{option}: seeds are whole numbers >= 0, got {negative}")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise UsageError(f"{option}: seed(s) {repeated} given more than once; name each seed once")
    return list(seeds)
