"""Outputs that never exist half-written: every file the project writes goes through atomic_output.

The runtime owns it (it is copied into services alone); the offline stages import it from here.
Four guarantees, all here so that no command needs its own:
- the file appears whole or not at all (a temporary file beside it, then one rename);
- an output that is one of the command's inputs is refused before anything is written (`inputs`);
- one writer per output at a time: a lock file beside the output (`.NAME.lock`, removed after) is
  held from the first byte to the rename, so two builds of the same plan cannot interleave; a file
  lock rather than one rename of a folder holding plan and manifest, because the outputs stay plain
  files where users and Makefiles expect them, and the lock is released by the OS when a writer dies;
- temporaries a killed writer left (`.NAME.*.tmp`) are swept when the next writer takes the lock;
- an output that exists and is not a regular file (a device such as /dev/null, a FIFO, a socket, a
  folder) is refused before anything is written, never replaced; so is `-` (see STDOUT_REFUSED); an
  output that is a symbolic link is written through to its target, the link kept.
Names beside a long output (`.NAME.lock`, `.NAME.*.tmp`) are shortened to fit the file system's
255 bytes: the name's first bytes and a hash of the whole name, so they stay unique and sweepable.

Inputs have their one check here too: `input_file` refuses a missing path, a folder and anything that
is not a regular file (a FIFO would block the reader forever, a device never ends) in one line.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import IO, Iterable, Iterator, Union

from runtime.errors import RuntimeUserError

FULL = (errno.ENOSPC, errno.EDQUOT)
PathLike = Union[str, "os.PathLike[str]"]
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
NAME_MAX = 255                     # bytes of one file name (ext4, XFS, btrfs, APFS; NTFS counts 255 UTF-16 units)
TEMPORARY_TAIL = 16                # what mkstemp adds to a temporary's stem: ".", 8 random characters, ".tmp", room
SHORT_WRITE = re.compile(r"(\d+) requested and (\d+) written")   # numpy's tofile on a full disk, without errno
STDOUT_REFUSED = ("output '-' is not standard output here (the command writes a whole file, atomically); name a file, "
                  "or the full path of a file called '-'")
KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
         (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))


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


def kind_of(mode: int) -> str | None:
    """What a file that is not a regular file is, in words; None for a regular file."""
    return next((name for test, name in KINDS if test(mode)), None if stat.S_ISREG(mode) else "not a regular file")


def input_file(path: PathLike, what: str, fix: str) -> Path:
    """`path` when it names a regular file (symlinks followed); one line otherwise: `{what} {path} not
    found; {fix}`, or what it is instead (a folder, a FIFO that would block the reader forever, a
    device that never ends)."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise RuntimeUserError(f"{what} {path} not found; {fix}") from None
    except OSError as error:
        raise RuntimeUserError(f"cannot read {what} {path}: {error.strerror or error}; {fix}") from None
    kind = kind_of(mode)
    if kind is not None:
        raise RuntimeUserError(f"{what} {path} is {kind}, not a regular file; {fix}")
    return path


def output_target(path: PathLike) -> Path:
    """The file an output path names, to be replaced: a symbolic link is followed to its target and
    written through, the link kept (renaming over the link would replace the link itself: /dev/stdout
    is one); one line when that target exists and is not a regular file (renaming over a device such
    as /dev/null, a FIFO or a socket would replace it with a regular file; over a folder it fails
    late), or for `-` (a file named '-' in the working folder, not standard output)."""
    path = Path(path)
    if str(path) == "-":
        raise RuntimeUserError(STDOUT_REFUSED)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    try:
        mode = os.stat(path).st_mode
    except OSError:
        pass  # missing (the usual case) or unreadable: the write itself reports it
    else:
        kind = kind_of(mode)
        if kind is not None:
            raise RuntimeUserError(f"output {path} is {kind}, not a regular file, and is never replaced; "
                                   "name a file to write")
    return path


@contextlib.contextmanager
def atomic_output(path: PathLike, inputs: Iterable[PathLike] = ()) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds. A failed
    write (a full disk, a vanished folder) becomes one line naming the file; nothing is left behind.
    `inputs`: the files the command reads; `path` naming one of them is refused, as is a `path` that
    exists and is not a regular file (`output_target`: a link is written through)."""
    path = output_target(path)
    refuse_input_as_output(path, inputs)
    created = missing_folders(path.parent)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RuntimeUserError(f"cannot write {path}: {error.strerror}; choose a writable output path") from None
    try:
        with _written(path) as tmp:
            yield tmp
    except BaseException:
        for folder in created:  # the folders made for this output, innermost first, if still empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def missing_folders(folder: Path) -> list[Path]:
    """`folder` and those above it that do not exist yet, innermost first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


@contextlib.contextmanager
def _written(path: Path) -> Iterator[Path]:
    """The temporary of `path` under its lock, renamed onto `path` when the block succeeds."""
    with output_lock(path):
        sweep_temporaries(path)
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=hidden_stem(path, TEMPORARY_TAIL) + ".", suffix=".tmp",
                                            dir=path.parent)
        except OSError as error:
            raise RuntimeUserError(f"cannot write {path}: {error.strerror}; choose a writable output path") from None
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            tmp.chmod(0o644)  # mkstemp's private mode would otherwise stick to the output
            yield tmp
            os.replace(tmp, path)
        except OSError as error:
            raise RuntimeUserError(write_failure(path, error)) from None
        finally:
            tmp.unlink(missing_ok=True)


def write_failure(path: Path, error: OSError) -> str:
    """The one line of a failed write: a full disk (ENOSPC, a quota, or numpy's short write, which
    carries no errno) named as such with the space left, anything else as the system said it."""
    if error.errno in FULL or (error.errno is None and SHORT_WRITE.search(str(error))):
        return (f"cannot write {path}: the disk holding {path.parent} is full ({_free_bytes(path.parent)} free); "
                "free disk space or choose an output on another disk, and run again")
    return f"cannot write {path}: {error.strerror or error}; check the output folder and run again"


def _free_bytes(folder: Path) -> str:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "unknown space"
    return f"{free / 2 ** 20:.1f} MiB" if free >= 2 ** 20 else f"{free} bytes"


def hidden_stem(path: Path, tail: int) -> str:
    """`.NAME`, the stem of the files kept beside `path`, short enough that `tail` more bytes fit in
    one file name: a long NAME keeps its first bytes and gains `~` and 16 hex digits of its hash."""
    stem = f".{path.name}"
    if len(os.fsencode(stem)) + tail <= NAME_MAX:
        return stem
    digest = hashlib.sha256(os.fsencode(path.name)).hexdigest()[:16]
    room = NAME_MAX - tail - 1 - 1 - len(digest)
    head = os.fsencode(path.name)[:room].decode("utf-8", "ignore")  # UTF-8 bytes >= UTF-16 units: fits NTFS too
    return f".{head}~{digest}"


def sweep_temporaries(path: Path) -> None:
    """Remove the temporaries of `path` a killed writer left; called with the output's lock held, so
    no live writer owns them."""
    for stale in path.parent.glob(f"{glob_escape(hidden_stem(path, TEMPORARY_TAIL))}.*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


@contextlib.contextmanager
def output_lock(path: Path) -> Iterator[None]:
    """Hold `.NAME.lock` beside `path` exclusively (fcntl on POSIX, msvcrt on Windows: both released
    by the OS if the process dies); the file is removed afterwards. A lock file replaced or removed
    while we waited is not ours: take the one now on disk."""
    lock_path = path.parent / f"{hidden_stem(path, len('.lock'))}.lock"
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
