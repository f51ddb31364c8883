"""The one error style of every command: one line naming the problem and the fix, exit code 2.

The runtime owns it because it is copied into services alone; the offline stages import it from
here (pipeline/errors.py), never the reverse.
"""
from __future__ import annotations

import argparse
import codecs
import contextlib
import logging
import signal
import sys
import threading
from typing import Callable, Iterator, NoReturn, Optional, Sequence

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


class RuntimeUserError(Exception):
    """A problem the user can fix (input, paths, installed packages); the message is one line
    naming the problem and the fix."""


class EngineError(RuntimeUserError):
    """A plan that cannot be loaded or run (it does not match its manifest, TensorRT refused it)."""


class PlanNotRunnable(EngineError):
    """A plan that cannot run on this machine at all: wrong backend, GPU, version or no GPU.
    Callers that can fall back (compare, bench, report) catch this type; the reason is its message."""


def one_line(text: object, limit: Optional[int] = 400) -> str:
    """Any message (an exception, TensorRT's logger) as a single line of at most `limit` characters
    (None: the whole message)."""
    line = " ".join(str(text).split())
    return line if limit is None or len(line) <= limit else line[:limit - 3] + "..."


def reason_of(error: BaseException) -> str:
    """A foreign exception's first line, or its type name when it has no message."""
    lines = str(error).strip().splitlines()
    return one_line(lines[0]) if lines else type(error).__name__


class CommandParser(argparse.ArgumentParser):
    """argparse whose usage errors are the project's one line (argparse prints the whole usage
    block first, several lines for a command with many options), exit code 2 through run_main."""

    def error(self, message: str) -> NoReturn:
        raise RuntimeUserError(f"{self.prog}: {message}; see {self.prog} --help")


def _terminated(signum, frame) -> NoReturn:
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a service manager, `kill`, a CI timeout) unwinds like Ctrl-C: every atomic output
    removes its temporary file. Only the main thread can install a handler; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def interrupts_held() -> Iterator[Callable[[], bool]]:
    """For foreign code that calls back into Python and swallows what the callback raises (TensorRT
    prints a KeyboardInterrupt raised in its logger or progress monitor, then carries on): SIGINT and
    SIGTERM are recorded instead of raised while the block runs; `pending()` tells whether one came
    (a progress monitor returns False then, which stops the build), and leaving the block raises
    KeyboardInterrupt for it. A SIGINT that was ignored (a background job) stays ignored. Only the
    main thread receives signals; elsewhere nothing changes."""
    received: list = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    previous = {}
    for name in ("SIGINT", "SIGTERM"):
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, lambda number, frame: received.append(number))
    try:
        yield lambda: bool(received)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        raise KeyboardInterrupt


def refuse_undecodable_paths(argv: Sequence[str]) -> None:
    """TensorRT's parser, ONNX Runtime and torch's exporter take file names as UTF-8. Where Python
    decodes file names otherwise (LC_ALL=C with PYTHONUTF8=0, a GBK locale), a non-ASCII path reaches
    them as other bytes than the file's: refuse it in one line before any work."""
    encoding = codecs.lookup(sys.getfilesystemencoding()).name
    if encoding == "utf-8":
        return
    for arg in argv:
        if not str(arg).isascii():
            shown = str(arg).encode("ascii", "backslashreplace").decode("ascii")
            raise RuntimeUserError(f"argument {shown} is not ASCII and this system decodes file names as {encoding}, "
                                   "not the UTF-8 that TensorRT, ONNX Runtime and torch expect; run with PYTHONUTF8=1 "
                                   "(or a UTF-8 locale) or use an ASCII-only path")


def run_main(main: Callable[[Optional[Sequence[str]]], Optional[int]], argv: Optional[Sequence[str]] = None) -> int:
    """Run a command's `main`: a user error becomes `error: ...` on stderr and exit code 2, Ctrl-C
    and SIGTERM exit code 130; outputs are written atomically, so neither leaves a partial file."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        with sigterm_as_interrupt():
            refuse_undecodable_paths(sys.argv[1:] if argv is None else argv)
            return int(main(argv) or 0)
    except RuntimeUserError as error:
        # never cut: the project's own messages end with their fix (foreign text inside is cut already)
        print(f"error: {one_line(error, limit=None)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("error: interrupted; no partial output was left behind", file=sys.stderr)
        return EXIT_INTERRUPTED
