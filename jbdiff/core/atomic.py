"""Atomic file writes: write to a temporary file beside the target, then rename."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    On any exception (KeyboardInterrupt included) the temporary file is removed and
    ``path`` is left untouched, so a reader never sees a half-written file.
    The temporary name keeps the target's suffix so format sniffing by extension works.
    """
    target = Path(path)
    tmp = staging_file(target, f".part{target.suffix}")
    try:
        yield tmp
        os.chmod(tmp, file_mode())  # writers that recreate the file (safetensors) or move one in make it 0600
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def staging_file(target: Path, suffix: str) -> Path:
    """A new empty hidden file beside ``target``, named ``.<stem>.<pid>.<random><suffix>``.

    Staging files of ``target`` whose writer has died (a ``kill -9``, a power cut) are
    removed first; those of live processes are left alone.
    """
    remove_orphaned_parts(target)
    fd, name = tempfile.mkstemp(prefix=f".{target.stem}.{os.getpid()}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    os.chmod(name, file_mode())  # mkstemp creates 0600; give the file the usual permissions
    return Path(name)


@functools.cache
def file_mode() -> int:
    """The permissions a new file gets under this process's umask (0644 under the usual 022).

    Read once: setting the umask to read it back would briefly change it for every thread.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o077)
    os.umask(umask)
    return 0o666 & ~umask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_orphaned_parts(target: Path) -> list[Path]:
    """Delete the staging files of ``target`` whose writing process no longer exists."""
    pattern = re.compile(rf"\.{re.escape(target.stem)}\.(\d+)\.\w{{8}}\.part")
    removed = []
    for candidate in target.parent.glob(".*.part*"):
        match = pattern.match(candidate.name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def remove_stale_parts(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete temporary files that a killed ``atomic_path`` writer left in ``folder``."""
    stale = [p for p in Path(folder).glob(".*.part*") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
