"""A TensorRT plan run through the project's runtime, as users run it (runtime.load_engine: profile
choice and long-mel chunking included). The one adapter validate has for it: `compare`'s Polygraphy
runner (compare.RuntimeRunner) and `bench`'s TensorRT rows both run a plan through this class."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import runtime


class PlanEngine:
    """`open()` loads the plan, calling it turns a mel into audio (numpy through the runtime's host
    path, or a CUDA tensor zero-copy) and notes the call's wall time, `close()` frees the engine."""

    def __init__(self, plan: str | Path):
        self.plan = Path(plan)
        self.engine = None
        self.last_seconds: float | None = None

    def open(self) -> PlanEngine:
        self.engine = runtime.load_engine(self.plan)
        return self

    @property
    def manifest(self) -> dict:
        return self.engine.manifest

    @property
    def input_name(self) -> str:
        return self.manifest["input"]["name"]

    @property
    def output_name(self) -> str:
        return self.manifest["output"]["name"]

    def __call__(self, mel: Any) -> Any:
        started = time.perf_counter()
        audio = self.engine(mel)
        self.last_seconds = time.perf_counter() - started
        return audio

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None
