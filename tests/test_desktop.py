"""Inside GPT-SoVITS on a desktop: the in-process part runs on Python 3.9+, every text file is UTF-8,
the dependency markers pick the right CUDA binding per platform, and no Linux-only assumption hides
in the code."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from pipeline.closure import PACKAGES, in_process_files
from pipeline.settings import tomllib

REPO = Path(__file__).resolve().parent.parent
SOURCES = sorted(p for folder in (*PACKAGES, "tests") for p in (REPO / folder).rglob("*.py"))


# --- Python 3.9 -------------------------------------------------------------------------------------


def test_in_process_part_needs_nothing_newer_than_python_3_9():
    files = in_process_files()
    assert REPO / "pipeline" / "settings.py" in files and REPO / "runtime" / "engine.py" in files
    vermin = "import sys; from vermin import main; sys.argv[0] = 'vermin'; sys.exit(main())"
    result = subprocess.run([sys.executable, "-c", vermin, "-t=3.9-", "--violations", "--no-tips", "--eval-annotations",
                             *map(str, files)], capture_output=True, text=True, encoding="utf-8")
    assert result.returncode == 0, result.stdout + result.stderr
    print(f"vermin: {len(files)} in-process files need Python 3.9 at most")


def test_ruff_lints_exactly_the_in_process_part_as_python_3_9():
    """pyproject.toml's per-file py39 target is the computed closure (tests' doubles aside), and the
    rest is linted as the offline part's 3.11, so the list is what makes the difference."""
    ruff = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["ruff"]
    targets = ruff["per-file-target-version"]
    assert set(targets.values()) == {"py39"} and ruff["target-version"] == "py311"
    listed = sorted(name for name in targets if not name.startswith("tests/"))
    assert listed == [path.relative_to(REPO).as_posix() for path in in_process_files()], \
        "run `python3 -m pipeline.closure --ruff` and put its lines in pyproject.toml"


def test_drop_in_runs_its_tests_without_tomllib(tmp_path, onnx_v4):
    """As on Python 3.10 (GPT-SoVITS' own): tomllib is hidden, pipeline.toml is read through tomli.
    pytest itself reads pyproject.toml with tomllib on 3.11, so it is pointed at an empty ini instead.
    The export (offline part, Python 3.11) is this run's own, handed over rather than made again."""
    ini = tmp_path / "pytest.ini"
    ini.write_text("[pytest]\nmarkers =\n    gpu: needs a GPU\n", encoding="utf-8")
    code = ("import sys; sys.modules['tomllib'] = None; import pytest; "
            f"sys.exit(pytest.main(['-c', {str(ini)!r}, '--rootdir', '.', 'tests/test_serving.py', '-q', "
            f"'-p', 'no:cacheprovider', '--onnx-v4', {str(onnx_v4)!r}, "
            "'-k', 'drop_in or engine_call or stats or yaml or rebuild or engine_settings']))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, encoding="utf-8")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout.splitlines()[-1], result.stdout[-500:]
    probe = subprocess.run([sys.executable, "-c", "import sys; sys.modules['tomllib'] = None; "
                            "import pipeline.settings as s; print(s.tomllib.__name__)"],
                           cwd=REPO, capture_output=True, text=True, encoding="utf-8", check=True)
    assert probe.stdout.strip() == "tomli"


# --- UTF-8 ----------------------------------------------------------------------------------------


TEXT_METHODS = {"read_text", "write_text"}


def text_io_without_encoding(path: Path) -> list[str]:
    """Calls that read or write text in the platform's default codec (GBK on a Chinese Windows)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        keywords = {k.arg for k in node.keywords}
        if "encoding" in keywords:
            continue
        function = node.func
        if isinstance(function, ast.Attribute) and function.attr in TEXT_METHODS:
            found.append(f"{path.relative_to(REPO)}:{node.lineno} .{function.attr}()")
        elif isinstance(function, ast.Name) and function.id == "open" or \
                isinstance(function, ast.Attribute) and function.attr == "open" and isinstance(function.value, ast.Name) \
                and function.value.id in ("io", "codecs"):
            mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
            text = not (isinstance(mode, ast.Constant) and isinstance(mode.value, str) and "b" in mode.value)
            if text:
                found.append(f"{path.relative_to(REPO)}:{node.lineno} open() in text mode")
        elif isinstance(function, ast.Attribute) and function.attr == "run" and any(
                k.arg == "text" and isinstance(k.value, ast.Constant) and k.value.value for k in node.keywords):
            found.append(f"{path.relative_to(REPO)}:{node.lineno} subprocess text output")
    return found


def test_every_text_read_and_write_names_utf8():
    problems = [problem for path in SOURCES for problem in text_io_without_encoding(path)]
    assert problems == [], "\n".join(problems)


def test_the_scan_finds_text_io_without_an_encoding(tmp_path):
    planted = REPO / "tests" / "_planted_for_scan.py"
    try:
        planted.write_text("from pathlib import Path\nPath('x').read_text()\nopen('y', 'w')\nopen('z', 'rb')\n", encoding="utf-8")
        assert [p.split(" ", 1)[1] for p in text_io_without_encoding(planted)] == [".read_text()", "open() in text mode"]
    finally:
        planted.unlink()


# --- dependency markers ---------------------------------------------------------------------------


def requirements(extra: str | None = None) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    raw = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return [Requirement(line) for line in raw]


def installed_on(reqs: list[Requirement], platform: str, python: str) -> set[str]:
    environment = {"sys_platform": platform, "python_version": python, "platform_system": {"linux": "Linux",
                   "win32": "Windows"}[platform], "os_name": {"linux": "posix", "win32": "nt"}[platform]}
    return {r.name for r in reqs if r.marker is None or r.marker.evaluate(environment)}


@pytest.mark.parametrize("platform, python, binding", [("linux", "3.11", "pycuda"), ("win32", "3.10", "cuda-bindings")])
def test_gpu_extra_installs_the_binding_that_has_wheels_there(platform, python, binding):
    chosen = installed_on(requirements("gpu"), platform, python)
    assert binding in chosen and ({"pycuda", "cuda-bindings"} - {binding}).isdisjoint(chosen)


@pytest.mark.parametrize("platform", ["linux", "win32"])
def test_cuda_python_extra_installs_cuda_bindings_anywhere(platform):
    assert installed_on(requirements("cuda-python"), platform, "3.10") == {"cuda-bindings"}


@pytest.mark.parametrize("platform", ["linux", "win32"])
def test_pipeline_with_gpu_installs_one_onnxruntime(platform):
    """onnxruntime and onnxruntime-gpu both install the module `onnxruntime`: never both at once."""
    with_gpu = installed_on(requirements("pipeline") + requirements("gpu"), platform, "3.11")
    with_cpu = installed_on(requirements("pipeline") + requirements("cpu"), platform, "3.11")
    assert "onnxruntime-gpu" in with_gpu and "onnxruntime" not in with_gpu
    assert "onnxruntime" in with_cpu and "onnxruntime-gpu" not in with_cpu


def test_in_process_dependencies_bring_tomli_only_where_tomllib_is_missing():
    assert "tomli" in installed_on(requirements(), "win32", "3.10")
    assert "tomli" not in installed_on(requirements(), "linux", "3.11")
    assert {"torch", "onnx"}.isdisjoint(installed_on(requirements(), "win32", "3.10"))  # GPT-SoVITS brings torch


# --- no Linux-only assumptions --------------------------------------------------------------------


LINUX_ONLY = {
    "a shared-library name": re.compile(r"\.so(\.\d+)?\b['\"]"),
    "os.fork": re.compile(r"\bos\.fork\b"),
    "a /tmp or /dev path": re.compile(r"['\"]/(tmp|dev)/"),
    "a shell-only command": re.compile(r"['\"](cp|mv|rm|cat|ls|sh|bash|which|chmod|grep|sed)['\"]\s*,|shell=True"),
}
# The deliberate places: the CUDA layer names the driver library of each platform (Linux and
# Windows), which the doctor and the pycuda capture path use; the Makefile is a make tool by nature
# (not Python, so not scanned).
ALLOWED = {("runtime/cuda.py", "a shared-library name")}


def linux_only_assumptions(path: Path) -> list[tuple[str, str, int]]:
    relative = str(path.relative_to(REPO))
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        for label, pattern in LINUX_ONLY.items():
            if pattern.search(line) and (relative, label) not in ALLOWED:
                found.append((relative, label, number))
    return found


def test_no_linux_only_assumptions_in_the_sources():
    this_file = Path(__file__).resolve()
    problems = [hit for path in SOURCES if path.resolve() != this_file for hit in linux_only_assumptions(path)]
    assert problems == [], problems


def test_the_linux_scan_can_fail(tmp_path):
    planted = REPO / "tests" / "_planted_for_scan.py"
    try:
        planted.write_text("import ctypes, os\nctypes.CDLL('libfoo.so')\nos.fork()\nopen('/tmp/x')\n", encoding="utf-8")
        assert [label for _, label, _ in linux_only_assumptions(planted)] == \
            ["a shared-library name", "os.fork", "a /tmp or /dev path"]
    finally:
        planted.unlink()
