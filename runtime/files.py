"""Outputs that never exist half-written: every file the project writes goes through atomic_output.

The runtime owns it (it is copied into services alone); the offline stages import it from here.
Four guarantees, all here so that no command needs its own:
- the file appears whole or not at all (a temporary file beside it, then one rename);
- an output that is one of the command's inputs is refused before anything is written (`inputs`);
- one writer per output at a time: a lock file beside the output (`.NAME.lock`, removed after) is
  held from the first byte to the rename, so two builds of the same plan cannot interleave; a file
  lock rather than one rename of a folder holding plan and manifest, because the outputs stay plain
  files where users and Makefiles expect them, and the lock is released by the OS when a writer dies;
- temporaries a killed writer left (`.NAME.*.tmp`) are swept when the next writer takes the lock.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Iterable, Iterator, Union

from runtime.errors import RuntimeUserError

FULL = (errno.ENOSPC, errno.EDQUOT)
PathLike = Union[str, "os.PathLike[str]"]
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: the same resolved path, or (hard links, case-insensitive
    file systems) the same file on disk."""
    if os.path.abspath(a) == os.path.abspath(b) or a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def refuse_input_as_output(path: Path, inputs: Iterable[PathLike]) -> None:
    """One line when `path` names a file the command reads: writing it would destroy the input."""
    for source in inputs:
        if source is not None and same_file(path, Path(source)):
            raise RuntimeUserError(f"output {path} is also an input of this command ({source}); "
                                   "choose another output path, the input would be replaced")


def inside(folder: PathLike, name: str, what: str) -> Path:
    """`folder / name` for a `name` taken from a file (a manifest field, an ONNX external-data
    location): a plain name of letters, digits, `_`, `.` and `-` whose real path, symlinks followed,
    stays inside `folder`; one line otherwise."""
    folder = Path(folder)
    parts = str(name).replace("\\", "/").split("/")
    if not all(SAFE_NAME.fullmatch(part) for part in parts) or ".." in parts:
        raise RuntimeUserError(f"{what} {name!r} is not a plain relative name (letters, digits, _ . -); "
                               "fix or rebuild the file that names it")
    path = folder.joinpath(*parts)
    real, root = os.path.realpath(path), os.path.realpath(folder)
    if os.path.commonpath([real, root]) != root:
        raise RuntimeUserError(f"{what} {name!r} leads outside {folder} (to {real}); "
                               "keep the file itself in that folder, not a link to elsewhere")
    return path


@contextlib.contextmanager
def atomic_output(path: PathLike, inputs: Iterable[PathLike] = ()) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds. A failed
    write (a full disk, a vanished folder) becomes one line naming the file; nothing is left behind.
    `inputs`: the files the command reads; `path` naming one of them is refused."""
    path = Path(path)
    refuse_input_as_output(path, inputs)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RuntimeUserError(f"cannot write {path}: {error.strerror}; choose a writable output path") from None
    with output_lock(path):
        sweep_temporaries(path)
        try:
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


def sweep_temporaries(path: Path) -> None:
    """Remove the temporaries of `path` a killed writer left; called with the output's lock held, so
    no live writer owns them."""
    for stale in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


@contextlib.contextmanager
def output_lock(path: Path) -> Iterator[None]:
    """Hold `.NAME.lock` beside `path` exclusively (fcntl on POSIX, msvcrt on Windows: both released
    by the OS if the process dies); the file is removed afterwards. A lock file replaced or removed
    while we waited is not ours: take the one now on disk."""
    lock_path = path.parent / f".{path.name}.lock"
    while True:
        try:
            stream = open(lock_path, "a+b")
        except OSError as error:
            raise RuntimeUserError(f"cannot write {path}: {error.strerror}; choose a writable output path") from None
        try:
            _lock(stream)
            if _is_current(stream, lock_path):
                break
        except OSError:  # a file system without locks (some network shares): write unlocked, as before locks
            stream.close()
            with contextlib.suppress(OSError):
                lock_path.unlink()
            yield
            return
        except BaseException:
            stream.close()
            raise
        stream.close()
    try:
        yield
    finally:
        _release(stream, lock_path)


def _release(stream: IO[bytes], lock_path: Path) -> None:
    """POSIX: remove the file before unlocking, so a waiter sees its file is gone and retries.
    Windows cannot remove an open file: unlock and close first; removal fails while a waiter has it
    open, and that waiter then holds the file still on disk."""
    if os.name != "nt":
        with contextlib.suppress(OSError):
            lock_path.unlink()
    _unlock(stream)
    stream.close()
    if os.name == "nt":
        with contextlib.suppress(OSError):
            lock_path.unlink()


def _is_current(stream: IO[bytes], lock_path: Path) -> bool:
    try:
        on_disk = os.stat(lock_path)
    except OSError:
        return False
    mine = os.fstat(stream.fileno())
    return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)


if os.name == "nt":
    import msvcrt

    def _lock(stream: IO[bytes]) -> None:
        while True:
            try:
                stream.seek(0)
                msvcrt.locking(stream.fileno(), msvcrt.LK_LOCK, 1)  # retries for 10 s, then raises
                return
            except OSError as error:
                if error.errno != errno.EDEADLK:
                    raise

    def _unlock(stream: IO[bytes]) -> None:
        with contextlib.suppress(OSError):
            stream.seek(0)
            msvcrt.locking(stream.fileno(), msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _lock(stream: IO[bytes]) -> None:
        fcntl.flock(stream.fileno(), fcntl.LOCK_EX)

    def _unlock(stream: IO[bytes]) -> None:
        fcntl.flock(stream.fileno(), fcntl.LOCK_UN)
