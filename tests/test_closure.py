"""The Makefile's dependencies come from the code: each stage depends on its entry module's import
closure (pipeline/closure.py), so a change to any file a stage loads remakes what it made, and a
change anywhere else remakes nothing."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.closure import PACKAGES, closure

REPO = Path(__file__).resolve().parent.parent
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def relative(files: list[Path], root: Path = REPO) -> set[str]:
    return {path.relative_to(root).as_posix() for path in files}


def test_the_clean_stage_loads_its_oracle_and_the_quality_bar():
    """The three files the hand-kept list missed, and the precision search the command imports in a function."""
    files = relative(closure(["export.clean"]))
    assert {"export/clean.py", "export/precision.py", "export/float64.py", "vocoder_models/mels.py",
            "pipeline/quality.py", "pipeline/settings.py", "export/__init__.py"} <= files
    assert not any(name.startswith(("build/", "validate/", "serving/")) for name in files), files


def test_closure_follows_relative_imports_dotted_names_and_package_inits(tmp_path):
    for name in PACKAGES:
        (tmp_path / name).mkdir()
    (tmp_path / "export" / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / "export" / "__main__.py").write_text("def main():\n    from . import a\n", encoding="utf-8")
    (tmp_path / "export" / "a.py").write_text("import json\nRUN = ['-m', 'build.b']\n", encoding="utf-8")
    (tmp_path / "build" / "b.py").write_text("from ..pipeline import c\n", encoding="utf-8")
    (tmp_path / "pipeline" / "c.py").write_text("", encoding="utf-8")
    (tmp_path / "pipeline" / "unused.py").write_text("", encoding="utf-8")
    assert relative(closure(["export"], tmp_path), tmp_path) == {
        "export/__init__.py", "export/__main__.py", "export/a.py", "build/b.py", "pipeline/c.py"}


@pytest.fixture()
def tree(tmp_path) -> Path:
    """A copy of the repository's sources with every `make engines` output made up to date
    (`make -t`), so `make -n` shows only what a change remakes."""
    root = tmp_path / "repo"
    for name in PACKAGES:
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("Makefile", "pipeline.toml", "pyproject.toml", "engines/README.md"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, root / name)
    (root / "venv").mkdir()
    (root / "venv" / ".installed").touch()
    assert make(root, "-t", "engines").returncode == 0
    assert make(root, "-q", "engines").returncode == 0  # a second `make engines` would do nothing
    return root


def make(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "VENV=venv", *args], cwd=root, capture_output=True,
                          text=True, encoding="utf-8")


def touch_later(path: Path) -> None:
    later = time.time() + 10
    os.utime(path, (later, later))


def commands(root: Path) -> str:
    done = make(root, "-n", "engines")
    assert done.returncode == 0, done.stderr
    return done.stdout


@needs_make
def test_editing_a_file_the_clean_stage_loads_remakes_the_cleaned_models(tree):
    touch_later(tree / "pipeline" / "quality.py")  # the quality bar: loaded by export and clean, not named by hand
    assert make(tree, "-q", "engines").returncode == 1
    remade = commands(tree)
    assert remade.count("-m export.clean ") == 4 and remade.count("-m build ") == 4, remade


@needs_make
def test_editing_the_float64_oracle_remakes_the_cleaned_models(tree):
    touch_later(tree / "export" / "float64.py")
    remade = commands(tree)
    assert remade.count("-m export.clean ") == 4, remade


@needs_make
def test_a_file_no_stage_loads_remakes_nothing(tree):
    touch_later(tree / "validate" / "report.py")
    assert make(tree, "-q", "engines").returncode == 0, commands(tree)


@needs_make
def test_a_stage_that_starts_loading_another_file_is_remade(tree):
    """The stamp: clean.py gains an import but keeps its old time; the list changed, so clean reruns."""
    source = tree / "export" / "clean.py"
    before = source.stat()
    source.write_text(source.read_text(encoding="utf-8") + "\nimport validate.plots  # noqa\n", encoding="utf-8")
    os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
    remade = commands(tree)
    assert remade.count("-m export.clean ") == 4 and "-m export --vocoder" not in remade, remade


# Top-level module names GPT-SoVITS' own code imports from its own tree (read from its source at
# 48b1a01 with ast: absolute imports whose first name is a folder or file of that tree). GPT-SoVITS
# puts those folders on sys.path, and the drop-in loads this project's packages into the same
# interpreter: a package of ours with one of these names shadows GPT-SoVITS' own (a top-level
# `models` did: tools/AP_BWE_main's `from models.model import ...` failed, and api_v2.py with it).
GPT_SOVITS_TOP_LEVEL = {
    "AR", "BigVGAN", "ERes2NetV2", "GPT_SoVITS", "TTS_infer_pack", "bs_roformer", "bsroformer", "config",
    "datasets1", "export_torch_script", "f5_tts", "feature_extractor", "fusion", "inference_webui", "kaldi",
    "lib", "mdxnet", "models", "module", "my_utils", "pooling_layers", "process_ckpt", "slicer2", "sv", "text",
    "tools", "utils", "vr",
}


def test_no_package_shadows_a_gpt_sovits_module():
    assert {path.parent.name for path in REPO.glob("*/__init__.py")} == set(PACKAGES)
    assert not set(PACKAGES) & GPT_SOVITS_TOP_LEVEL
