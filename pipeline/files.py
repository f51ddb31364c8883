"""File helpers of the offline stages: atomic writes and the check of an input file (owned by the
runtime, runtime/files.py, and imported from there) and content hashes for manifests."""
from __future__ import annotations

import hashlib
import os

from runtime.files import atomic_output, input_file

__all__ = ["atomic_output", "input_file", "sha256_of"]


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
