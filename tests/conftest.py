"""Shared fixtures: exported models are made once per test session (v3 export takes ~30 s)."""
from __future__ import annotations

import shutil
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


def pytest_addoption(parser):
    parser.addoption("--onnx-v4", metavar="PATH", help="the onnx_v4 fixture copies this export of the synthetic-default "
                     "v4 vocoder instead of exporting it (a pytest run inside this suite's run: tests/test_desktop.py)")


@pytest.fixture(scope="session")
def onnx_v4(request, tmp_path_factory, vocoder_v4) -> Path:
    """The synthetic-default v4 vocoder exported to ONNX (verified against PyTorch on export)."""
    from export.to_onnx import onnx_from_module
    output = tmp_path_factory.mktemp("onnx") / "v4.onnx"
    given = request.config.getoption("onnx_v4")
    if given:  # the run around this one exported it already (and its tests compare it with vocoder_v4 again)
        return Path(shutil.copyfile(given, output))
    return onnx_from_module(vocoder_v4, "v4", output, settings=load_settings())


@pytest.fixture(scope="session")
def onnx_v3(tmp_path_factory, vocoder_v3) -> Path:
    from export.to_onnx import onnx_from_module
    return onnx_from_module(vocoder_v3, "v3", tmp_path_factory.mktemp("onnx") / "v3.onnx", settings=load_settings())
