"""python -m serving.triton: the former name of `python -m serving.triton_server`, still accepted
with one line naming the new one."""
from __future__ import annotations

import logging
from typing import Sequence

from runtime.errors import run_main
from serving import triton_server

log = logging.getLogger("serving")


def main(argv: Sequence[str] | None = None) -> int:
    log.warning("python -m serving.triton is now python -m serving.triton_server; the old name will be removed")
    return triton_server.main(argv)


if __name__ == "__main__":
    raise SystemExit(run_main(main))
