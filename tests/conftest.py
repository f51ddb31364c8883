"""Shared fixtures: exported models are made once per test session (v3 export takes ~30 s)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline.settings import load_settings  # noqa: E402  (importable once the repository is on the path)


@pytest.fixture(scope="session")
def vocoder_v4():
    from export.checkpoints import load_vocoder
    return load_vocoder("v4", settings=load_settings())


@pytest.fixture(scope="session")
def vocoder_v3():
    from export.checkpoints import load_vocoder
    return load_vocoder("v3", settings=load_settings())


@pytest.fixture(scope="session")
def onnx_v4(tmp_path_factory, vocoder_v4) -> Path:
    """The synthetic-default v4 vocoder exported to ONNX (verified against PyTorch on export)."""
    from export.to_onnx import onnx_from_module
    return onnx_from_module(vocoder_v4, "v4", tmp_path_factory.mktemp("onnx") / "v4.onnx", settings=load_settings())


@pytest.fixture(scope="session")
def onnx_v3(tmp_path_factory, vocoder_v3) -> Path:
    from export.to_onnx import onnx_from_module
    return onnx_from_module(vocoder_v3, "v3", tmp_path_factory.mktemp("onnx") / "v3.onnx", settings=load_settings())


# The files that take minutes on a 2-core machine (each exports or plans v3), slowest first. `make test`
# hands whole files to its workers in collection order, so these start first and the short files fill
# in behind them; started last, one of them would be a worker's lone tail.
SLOWEST_FILES = ("test_stress.py", "test_precision.py", "test_build.py", "test_export.py", "test_clean.py")


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        name = item.path.name
        return SLOWEST_FILES.index(name) if name in SLOWEST_FILES else len(SLOWEST_FILES)
    items.sort(key=rank)
