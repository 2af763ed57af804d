"""The files a run will write: checked up front, then claimed while it runs.

A run names every file it will write (the audio, each take, the spectrograms, the manifest).
:func:`check_outputs` refuses, in one sentence and before any work, an output that exists
(without ``overwrite``), is a folder, is one of the run's inputs, or lies in a folder that is
missing or not writable, and a run whose output cannot fit the free disk space.
:func:`claim_outputs` then creates a hidden ``.NAME.claim`` file beside each output with
``O_EXCL``, so a second run on the same outputs is refused while the first one runs; claims of
a process that has died are taken over.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

from jbdiff.core.errors import JbdiffError


def _size(count: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if count < 1000 or unit == "PB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def check_outputs(
    paths: Sequence[Path],
    *,
    overwrite: bool,
    inputs: Sequence[str | os.PathLike[str]] = (),
    needed_bytes: int = 0,
) -> None:
    """Refuse, in one sentence, any of ``paths`` that this run could not or should not write."""
    sources = [Path(p) for p in inputs if Path(p).exists()]
    for path in paths:
        folder = path.parent
        if not folder.is_dir():
            raise JbdiffError(f"{path}: the output folder {folder} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise JbdiffError(f"{path}: the output folder {folder} is not writable")
        if path.is_dir():
            raise JbdiffError(f"{path}: is a folder, not a file that can be written")
        if any(path.exists() and os.path.samefile(path, source) for source in sources):
            raise JbdiffError(f"{path}: is an input of this run; write the output to another file")
        if path.exists() and not overwrite:
            raise JbdiffError(f"{path}: already exists (pass --overwrite to replace it)")
    if needed_bytes and paths:
        free = shutil.disk_usage(paths[0].parent).free
        if needed_bytes > free:
            raise JbdiffError(
                f"{paths[0]}: the output needs about {_size(needed_bytes)} but {paths[0].parent} has {_size(free)} free"
            )


def _claim_file(path: Path) -> Path:
    return path.with_name(f".{path.name}.claim")


def _owner(claim: Path) -> int | None:
    """The live process that holds ``claim`` (None when it is gone or the file says nothing)."""
    try:
        pid = int(claim.read_text().strip() or 0)
    except (OSError, ValueError):
        return None
    if pid <= 0 or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # another user's live process
        return pid
    return pid


def _take(path: Path) -> Path:
    claim = _claim_file(path)
    for _ in range(3):
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _owner(claim)
            if owner is not None:
                raise JbdiffError(f"{path}: is being written by another run (process {owner}); wait for it or choose another output") from None
            claim.unlink(missing_ok=True)  # its process has died
            continue
        except OSError as error:
            raise JbdiffError(f"{path}: cannot be claimed for writing ({error.strerror})") from None
        with os.fdopen(fd, "w") as handle:
            handle.write(str(os.getpid()))
        return claim
    raise JbdiffError(f"{path}: another run keeps claiming it; choose another output")


@contextlib.contextmanager
def claim_outputs(
    paths: Sequence[Path],
    *,
    overwrite: bool,
    inputs: Sequence[str | os.PathLike[str]] = (),
    needed_bytes: int = 0,
) -> Iterator[None]:
    """Check ``paths`` (:func:`check_outputs`), then hold a claim on each until the block ends."""
    check_outputs(paths, overwrite=overwrite, inputs=inputs, needed_bytes=needed_bytes)
    with contextlib.ExitStack() as held:
        for path in paths:
            claim = _take(path)
            held.callback(claim.unlink, missing_ok=True)
        check_outputs(paths, overwrite=overwrite, inputs=inputs)  # a run that finished meanwhile may have written them
        yield
