"""Atomic file writes: write to a temporary file beside the target, then rename."""

from __future__ import annotations

import contextlib
import os
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
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".part{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_parts(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete temporary files that a killed ``atomic_path`` writer left in ``folder``."""
    stale = [p for p in Path(folder).glob(".*.part*") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
