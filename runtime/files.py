"""Outputs that never exist half-written: every file the project writes goes through atomic_output.

The runtime owns it (it is copied into services alone); the offline stages import it from here.
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union

from runtime.errors import RuntimeUserError

FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def atomic_output(path: Union[str, "os.PathLike[str]"]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds. A failed
    write (a full disk, a vanished folder) becomes one line naming the file; nothing is left behind."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise RuntimeUserError(f"cannot write {path}: {error.strerror}; choose a writable output path") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        tmp.chmod(0o644)  # mkstemp's private mode would otherwise stick to the output
        yield tmp
        os.replace(tmp, path)
    except OSError as error:
        fix = "free disk space" if error.errno in FULL else "check the output folder"
        raise RuntimeUserError(f"cannot write {path}: {error.strerror or error}; {fix} and run again") from None
    finally:
        tmp.unlink(missing_ok=True)
