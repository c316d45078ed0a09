"""Output paths checked before any work, and a fallback when a late write still fails.

A long command (``research`` with a real model takes hours) must not find out at the end
that ``--out`` names a folder, sits under a file, or cannot be written: the check runs first
and is one ``error:`` line naming the flag (exit 2). If writing still fails at the end (the
disk filled up, the folder was removed), :func:`write_with_fallback` writes the text where it
can and says where.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from q3agent.errors import UsageError

__all__ = ["OutputPathError", "check_output_dir", "check_output_file", "write_with_fallback"]


class OutputPathError(UsageError):
    """An output path (``--out``, ``--trace``) that cannot be written; says which and why."""


def _existing_ancestor(path: Path) -> Path:
    for candidate in path.parents:
        if candidate.exists():
            return candidate
    return Path.cwd()


def _check_folder_writable(folder: Path, flag: str, given: str) -> None:
    """``folder`` (or, when it does not exist yet, its nearest existing parent) takes files."""
    probe_in = folder if folder.exists() else _existing_ancestor(folder)
    if not probe_in.is_dir():
        raise OutputPathError(
            f"{flag} {given}: {probe_in} is a file, not a folder; choose another path"
        )
    try:
        with tempfile.TemporaryFile(dir=probe_in):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputPathError(
            f"{flag} {given}: cannot write in {probe_in} ({reason}); choose another path"
        ) from None


def check_output_file(path: str | Path, flag: str) -> Path:
    """Check that a file can be written at ``path`` (missing folders will be created).

    Raises :class:`OutputPathError` when ``path`` is a folder, lies under a file, or its
    folder does not take new files. Creates nothing.
    """
    given = str(path)
    target = Path(path).expanduser()
    if target.is_dir():
        raise OutputPathError(
            f"{flag} {given} is a folder; give a file name, e.g. {flag} {target / 'report.md'}"
        )
    if target.exists():
        if not os.access(target, os.W_OK):
            raise OutputPathError(f"{flag} {given}: the file is not writable; choose another path")
        return target
    _check_folder_writable(target.parent, flag, given)
    return target


def check_output_dir(path: str | Path, flag: str) -> Path:
    """Check that ``path`` is (or can be created as) a folder that takes files."""
    given = str(path)
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise OutputPathError(f"{flag} {given} is a file; give a folder (it is created if missing)")
    _check_folder_writable(target, flag, given)
    return target


def write_with_fallback(text: str, path: Path, *, stem: str = "q3agent-report") -> Path:
    """Write ``text`` to ``path``; if that fails, to a new file in the current folder or the
    temporary folder, saying so in one ``error:`` line on stderr. Returns where it went;
    raises only when no place works."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path
    except OSError as first:
        error = first
    name = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}{path.suffix or '.md'}"
    for folder in (Path.cwd(), Path(tempfile.gettempdir())):
        fallback = folder / name
        try:
            fallback.write_text(text, encoding="utf-8")
        except OSError:
            continue
        print(
            f"error: could not write {path} ({error.strerror or error}); the report is in "
            f"{fallback}",
            file=sys.stderr,
        )
        return fallback
    raise error
