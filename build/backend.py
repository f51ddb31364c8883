"""Which TensorRT the build uses: full TensorRT (`tensorrt`) or TensorRT-RTX (`tensorrt_rtx`).

Both expose the same Python API for what this stage needs (builder, strongly typed network, ONNX
parser, optimization profiles, progress monitor); the differences are kept to a few properties here.
The modules are imported only when asked for, so a missing one is a one-line error, not a crash.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Callable

from tqdm import tqdm

from pipeline.errors import UserError
from runtime import cuda
from runtime.runnable import PIP_NAMES
from runtime.targets import sm_name

log = logging.getLogger("build")

AUTO_ORDER = ("tensorrt", "tensorrt_rtx")  # full TensorRT first: it runs on every supported GPU
TITLES = {"tensorrt": "full TensorRT", "tensorrt_rtx": "TensorRT-RTX"}


@dataclass(frozen=True)
class LoadedBackend:
    """The TensorRT module the build uses (runtime/runnable.py's BackendInfo describes one to the runtime)."""

    name: str         # "tensorrt" or "tensorrt_rtx"
    trt: ModuleType   # the imported module

    @property
    def version(self) -> str:
        return self.trt.__version__

    @property
    def is_rtx(self) -> bool:
        return self.name == "tensorrt_rtx"

    @property
    def title(self) -> str:
        return TITLES[self.name]


def pip_install_hint(name: str) -> str:
    """The command that installs a backend into the interpreter running now."""
    python = sys.executable
    relative = os.path.relpath(python)
    return f"{relative if not relative.startswith('..') else python} -m pip install {PIP_NAMES[name]}"


def installed_backends() -> list[str]:
    """Backend modules present in this environment, in auto order (nothing is imported)."""
    return [name for name in AUTO_ORDER if importlib.util.find_spec(name) is not None]


def load_backend(choice: str) -> LoadedBackend:
    """Import the chosen backend; `auto` takes full TensorRT if installed, else TensorRT-RTX."""
    if choice not in ("auto", *AUTO_ORDER):
        raise UserError(f"unknown backend {choice!r}; use auto, tensorrt or tensorrt_rtx")
    candidates = AUTO_ORDER if choice == "auto" else (choice,)
    for name in candidates:
        if importlib.util.find_spec(name) is None:
            continue
        try:
            return LoadedBackend(name, importlib.import_module(name))
        except ImportError as error:
            if choice != "auto":
                raise UserError(f"{TITLES[name]} (module {name}) is installed but does not load ({error}); "
                                f"reinstall it: {pip_install_hint(name)} --force-reinstall") from None
            log.warning("%s (module %s) does not load (%s); trying the next backend", TITLES[name], name, error)
    if choice == "auto":
        raise UserError("no TensorRT backend is installed; install TensorRT-RTX (builds without a GPU): "
                        f"{pip_install_hint('tensorrt_rtx')}, or full TensorRT on a GPU machine: "
                        f"{pip_install_hint('tensorrt')}")
    raise UserError(f"{TITLES[choice]} (module {choice}) is not installed; install it: {pip_install_hint(choice)}"
                    + ("" if choice == "tensorrt_rtx" else " (it needs an NVIDIA GPU to build), "
                       "or pass --backend tensorrt_rtx"))


def full_tensorrt_targets(hardware_compatibility: str) -> list[str] | None:
    """What a full-TensorRT plan built here runs on: the build GPU's compute capability (asked
    through the runtime's driver probe), unless it was built Ampere-plus (then any Ampere or newer
    GPU: None, and the runtime leaves the verdict to TensorRT)."""
    gpus = cuda.driver_state().gpus
    if hardware_compatibility == "ampere_plus" or not gpus:
        return None
    return [sm_name(gpus[0].capability)]


def progress_bars(trt: ModuleType, interrupted: Callable[[], bool] = lambda: False):
    """A TensorRT progress monitor that shows one tqdm bar per running build phase and stops the
    build once `interrupted()` (a held Ctrl-C or SIGTERM, runtime.errors.interrupts_held)."""

    class TqdmProgress(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self._bars: dict[str, tqdm] = {}
            self._lock = threading.Lock()  # TensorRT may report from several threads

        def phase_start(self, phase_name, parent_phase, num_steps):
            with self._lock:
                self._bars[phase_name] = tqdm(total=num_steps, desc=phase_name, unit="step", leave=False,
                                              position=len(self._bars), disable=None)

        def step_complete(self, phase_name, step):
            with self._lock:
                bar = self._bars.get(phase_name)
                if bar is not None:
                    bar.update(step + 1 - bar.n)
            return not interrupted()

        def phase_finish(self, phase_name):
            with self._lock:
                bar = self._bars.pop(phase_name, None)
                if bar is not None:
                    bar.close()

    return TqdmProgress()
