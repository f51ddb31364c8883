"""The shared shape of every `python -m STAGE` entry point: logging set up, UserError as one line."""
from __future__ import annotations

import logging
import sys
from typing import Callable, Sequence

from pipeline.errors import UserError


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run `main`; a UserError becomes `error: ...` on stderr and exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        return int(main(argv) or 0)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
