"""The one error style of every command: one line naming the problem and the fix, exit code 2.

The runtime owns it because it is copied into services alone; the offline stages import it from
here (pipeline/errors.py), never the reverse.
"""
from __future__ import annotations

import logging
import sys
from typing import Callable, Optional, Sequence

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


def run_main(main: Callable[[Optional[Sequence[str]]], Optional[int]], argv: Optional[Sequence[str]] = None) -> int:
    """Run a command's `main`: a user error becomes `error: ...` on stderr and exit code 2, Ctrl-C
    exit code 130; outputs are written atomically, so neither leaves a partial file."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        return int(main(argv) or 0)
    except RuntimeUserError as error:
        # never cut: the project's own messages end with their fix (foreign text inside is cut already)
        print(f"error: {one_line(error, limit=None)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("error: interrupted; no partial output was left behind", file=sys.stderr)
        return EXIT_INTERRUPTED
