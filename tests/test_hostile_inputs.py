"""Every command and the runtime's Python API against every bad input a user or a broken disk can
produce. Each row names its expected outcome:

- error: one line on stderr, `error: ` plus the named problem and its fix, exit code 2, no
  traceback (an exception escaping `main` fails the row), and no new or half-written file beside
  the inputs (TensorRT-RTX's runtime cache of compiled kernels, kept beside the plan on purpose
  once a plan has run, is not an output); in Python the documented exception
  (runtime.RuntimeUserError or a subclass);
- accepted: the input is converted as stated and the output is right;
- interrupted: Ctrl-C in the middle of the work exits 130 and leaves no partial file.

The runtime rows run against the TensorRT-RTX contract double over the host CUDA double
(tests/trt_double.py): the plan is loaded and executed on CPU, so a mel reaches the engine.
"""
from __future__ import annotations

import copy
import errno
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import pytest
import torch

import runtime
from build.__main__ import main as build_command
from build.plan import build_plan
from export.__main__ import main as export_main
from export.checkpoints import save_v4_checkpoint
from export.clean import main as clean_main
from pipeline.settings import VOCODERS, load_settings
from runtime.__main__ import main as runtime_main
from runtime.errors import run_main
from serving.triton import main as triton_main
from trt_double import install_on_cpu
from validate.__main__ import main as validate_main

REPO = Path(__file__).resolve().parent.parent
PROFILES = [{"name": "short", "min": [1, 1], "opt": [1, 32], "max": [2, 64]},
            {"name": "long", "min": [1, 1], "opt": [1, 64], "max": [1, 128]}]
FULL = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@dataclass(frozen=True)
class Row:
    name: str
    main: Callable
    argv: Callable              # (inputs: Inputs) -> list of arguments
    expect: str                 # "error", "accepted" or "interrupted"
    says: str = ""              # for errors: a phrase the line must contain
    damage: Callable | None = None   # (inputs, monkeypatch) -> None: breaks a file or the machine first


class Inputs:
    """Good inputs in a fresh folder; rows damage copies of them."""

    def __init__(self, folder: Path, onnx_v4: Path, checkpoint: Path, plan: Path):
        self.folder, self.onnx, self.checkpoint, self.plan = folder, onnx_v4, checkpoint, plan
        self.out = folder / "out"

    def file(self, name: str, content: bytes) -> Path:
        path = self.folder / name
        path.write_bytes(content)
        return path

    def mel(self, array: np.ndarray, name: str = "mel.npy") -> Path:
        path = self.folder / name
        np.save(path, array)
        return path

    def manifest(self) -> Path:
        return self.plan.with_suffix(".json")

    def edit_manifest(self, change: Callable[[dict], None]) -> None:
        manifest = json.loads(self.manifest().read_text(encoding="utf-8"))
        change(manifest)
        self.manifest().write_text(json.dumps(manifest), encoding="utf-8")


def speech_mel(frames: int, batch: int = 1) -> np.ndarray:
    from export.mels import sample_mel
    return sample_mel("v4", frames, batch=batch, seed=frames)


def truncated(path: Path) -> bytes:
    return path.read_bytes()[: path.stat().st_size // 2]


def interrupted_after(function):
    """`function`, then Ctrl-C: the work is half done and its temporary output exists."""
    def wrapper(*args, **kwargs):
        function(*args, **kwargs)
        raise KeyboardInterrupt
    return wrapper


def raising(error):
    def fail(*args, **kwargs):
        raise error
    return fail


def settings_with_small_profiles() -> dict:
    settings = copy.deepcopy(load_settings())
    for vocoder in VOCODERS:
        settings["profiles"][vocoder] = copy.deepcopy(PROFILES)
    return settings


def build_main(argv) -> int:
    """`python -m build` given the small profiles the double builds quickly, as the command would load them."""
    return build_command(argv, settings=settings_with_small_profiles())


# ---- rows -----------------------------------------------------------------------------------------

def run_cmd(*tail):
    return lambda i: [str(i.plan), *map(str, tail)]


def export_argv(checkpoint: Callable, output: Callable = lambda i: i.out / "v4.onnx") -> Callable:
    return lambda i: ["--vocoder", "v4", "--checkpoint", checkpoint(i), "--output", output(i)]


def bad_file(name: str, content: Callable) -> Callable:
    """(inputs) -> the path of a file `name` holding content(inputs)."""
    return lambda i: i.file(name, content(i))


def clean_argv(source: Callable, output: Callable = lambda i: i.out / "v4.fp32.onnx") -> Callable:
    return lambda i: [source(i), "--precision", "fp32", "--output", output(i)]


def build_argv(source: Callable, output: Callable = lambda i: i.out / "v4.fp32.plan") -> Callable:
    return lambda i: [source(i), "--vocoder", "v4", "--precision", "fp32", "--backend", "tensorrt_rtx", "--output", output(i)]


def blocked(name: str) -> Callable:
    """An output whose folder is a file."""
    return lambda i: i.file("blocker", b"x") / name


EMPTY, TRUNCATED_ONNX, GARBAGE = (lambda i: b""), (lambda i: truncated(i.onnx)), (lambda i: os.urandom(2048))
CHECKPOINT, ONNX = (lambda i: i.checkpoint), (lambda i: i.onnx)
READ_PT, READ_ONNX = "not a readable PyTorch file", "not a readable ONNX model"

EXPORT = [
    Row("export: checkpoint missing", export_main, export_argv(lambda i: i.folder / "none.pth"), "error", "not found"),
    Row("export: checkpoint empty", export_main, export_argv(bad_file("e.pth", EMPTY)), "error", READ_PT),
    Row("export: checkpoint truncated", export_main, export_argv(bad_file("t.pth", lambda i: truncated(i.checkpoint))),
        "error", READ_PT),
    Row("export: checkpoint garbage", export_main, export_argv(bad_file("g.pth", GARBAGE)), "error", READ_PT),
    Row("export: checkpoint whose pickle reads a missing memo entry", export_main,
        export_argv(bad_file("m.pth", lambda i: b"h\x05.")), "error", READ_PT),  # KeyError in the unpickler
    Row("export: output folder is a file", export_main, export_argv(CHECKPOINT, blocked("v4.onnx")), "error", "cannot write"),
    Row("export: disk full while saving", export_main, export_argv(CHECKPOINT), "error", "free disk space",
        damage=lambda i, mp: mp.setattr(onnx, "save", raising(FULL))),
    Row("export: Ctrl-C after the graph is written", export_main, export_argv(CHECKPOINT), "interrupted",
        damage=lambda i, mp: mp.setattr(torch.onnx, "export", interrupted_after(torch.onnx.export))),
]

CLEAN = [
    Row("clean: ONNX empty", clean_main, clean_argv(bad_file("bad.onnx", EMPTY)), "error", "not a valid ONNX model"),
    Row("clean: ONNX truncated", clean_main, clean_argv(bad_file("bad.onnx", TRUNCATED_ONNX)), "error", "not a valid ONNX model"),
    Row("clean: ONNX garbage", clean_main, clean_argv(bad_file("bad.onnx", GARBAGE)), "error", "not a valid ONNX model"),
    Row("clean: ONNX missing", clean_main, clean_argv(lambda i: i.folder / "none.onnx"), "error", "not found"),
    Row("clean: output folder is a file", clean_main, clean_argv(ONNX, blocked("v4.fp32.onnx")), "error", "cannot write"),
    Row("clean: disk full while saving", clean_main, clean_argv(ONNX), "error", "free disk space",
        damage=lambda i, mp: mp.setattr(onnx, "save", raising(FULL))),
    Row("clean: Ctrl-C while saving", clean_main, clean_argv(ONNX), "interrupted",
        damage=lambda i, mp: mp.setattr(onnx, "save", interrupted_after(onnx.save))),
]

BUILD = [
    Row("build: ONNX empty", build_main, build_argv(bad_file("bad.onnx", EMPTY)), "error", READ_ONNX),
    Row("build: ONNX truncated", build_main, build_argv(bad_file("bad.onnx", TRUNCATED_ONNX)), "error", READ_ONNX),
    Row("build: ONNX garbage", build_main, build_argv(bad_file("bad.onnx", GARBAGE)), "error", READ_ONNX),
    Row("build: ONNX missing", build_main, build_argv(lambda i: i.folder / "none.onnx"), "error", "not found"),
    Row("build: output folder is a file", build_main, build_argv(ONNX, blocked("v4.fp32.plan")), "error", "cannot write"),
    Row("build: disk full while writing the manifest", build_main, build_argv(ONNX), "error", "free disk space",
        damage=lambda i, mp: mp.setattr("build.plan.manifest_text", raising(FULL))),
    Row("build: Ctrl-C while building", build_main, build_argv(ONNX), "interrupted",
        damage=lambda i, mp: mp.setattr("build.plan.build_serialized", raising(KeyboardInterrupt()))),
]

RUNTIME = [
    Row("runtime: plan missing", runtime_main, lambda i: [i.folder / "none.plan", "--mel", i.mel(speech_mel(20)), "--output",
                                                          i.out / "a.wav"], "error", "not found"),
    Row("runtime: manifest missing", runtime_main, run_cmd("--mel", "MEL", "--output", "OUT"), "error", "manifest",
        damage=lambda i, mp: i.manifest().unlink()),
    Row("runtime: manifest not JSON", runtime_main, run_cmd("--mel", "MEL", "--output", "OUT"), "error", "not valid JSON",
        damage=lambda i, mp: i.manifest().write_text("{\"format\": 1,", encoding="utf-8")),
    Row("runtime: manifest lacks a field", runtime_main, run_cmd("--mel", "MEL", "--output", "OUT"), "error", "hop",
        damage=lambda i, mp: i.edit_manifest(lambda m: m.pop("hop"))),
    Row("runtime: manifest field of the wrong type", runtime_main, run_cmd("--mel", "MEL", "--output", "OUT"), "error",
        "n_mels must be a positive integer", damage=lambda i, mp: i.edit_manifest(lambda m: m.update(n_mels="100"))),
    Row("runtime: manifest of another plan", runtime_main, run_cmd("--mel", "MEL", "--output", "OUT"), "error",
        "describes v3.fp16.plan", damage=lambda i, mp: i.edit_manifest(lambda m: m["plan"].update(file="v3.fp16.plan"))),
    Row("runtime: plan truncated", runtime_main, run_cmd("--mel", "MEL", "--output", "OUT"), "error",
        "does not match its manifest", damage=lambda i, mp: i.plan.write_bytes(truncated(i.plan))),
    Row("runtime: plan empty", runtime_main, run_cmd("--mel", "MEL", "--output", "OUT"), "error",
        "does not match its manifest", damage=lambda i, mp: i.plan.write_bytes(b"")),
    Row("runtime: plan garbage of the same size", runtime_main, run_cmd("--mel", "MEL", "--output", "OUT"), "error",
        "sha256 differs", damage=lambda i, mp: i.plan.write_bytes(os.urandom(i.plan.stat().st_size))),
    Row("runtime: garbage plan with a manifest that matches it", runtime_main, run_cmd("--mel", "MEL", "--output", "OUT"),
        "error", "could not load", damage=lambda i, mp: _garbage_with_matching_manifest(i)),
] + [
    Row(f"runtime: mel {kind}", runtime_main, run_cmd("--mel", "MEL:" + kind, "--output", "OUT"), "error", says)
    for kind, says in (("nan", "NaN or Inf"), ("inf", "NaN or Inf"), ("rank4", "(batch, n_mels, frames)"),
                       ("80bands", "80 bands"), ("zero-frames", "empty"), ("batch0", "empty"), ("int", "floating point"),
                       ("text", "not a numeric .npy"), ("missing", "not found"))
] + [
    Row("runtime: output folder is a file", runtime_main, run_cmd("--mel", "MEL", "--output", "BLOCKED"), "error",
        "cannot write"),
    Row("runtime: disk full while writing the WAV", runtime_main, run_cmd("--mel", "MEL", "--output", "OUT"), "error",
        "free disk space", damage=lambda i, mp: mp.setattr("runtime.wav._write_pcm16_wav", raising(FULL))),
    Row("runtime: float64 mel (converted to float32)", runtime_main, run_cmd("--mel", "MEL:float64", "--output", "OUT"),
        "accepted"),
    Row("runtime: Fortran-order mel (made contiguous)", runtime_main, run_cmd("--mel", "MEL:fortran", "--output", "OUT"),
        "accepted"),
    Row("runtime: mel longer than every profile (chunked)", runtime_main, run_cmd("--mel", "MEL:long", "--output", "OUT"),
        "accepted"),
]

VALIDATE = [
    Row("validate compare: reference garbage", validate_main, lambda i: ["compare", i.file("r.onnx", os.urandom(999)), i.onnx],
        "error", "ONNX"),
    Row("validate compare: candidate missing", validate_main, lambda i: ["compare", i.onnx, i.folder / "none.onnx"], "error",
        "not found"),
    Row("validate compare: plan whose manifest is broken", validate_main, lambda i: ["compare", i.onnx, i.plan], "error",
        "not valid JSON", damage=lambda i, mp: i.manifest().write_text("[", encoding="utf-8")),
    Row("validate mel: WAV garbage", validate_main, lambda i: ["mel", i.file("in.wav", os.urandom(500)), "--vocoder", "v4",
                                                               "--output", i.out / "m.npy"], "error", "WAV"),
    Row("validate mel: WAV missing", validate_main, lambda i: ["mel", i.folder / "none.wav", "--vocoder", "v4",
                                                               "--output", i.out / "m.npy"], "error", "not found"),
    Row("validate bench: zero frames", validate_main, lambda i: ["bench", "--frames", "0"], "error", "positive"),
    Row("triton: a manifest that is not JSON", triton_main, lambda i: ["--engines", i.folder, "--output", i.out / "triton"],
        "error", "not valid JSON", damage=lambda i, mp: i.manifest().write_text("{{", encoding="utf-8")),
]

ROWS = EXPORT + CLEAN + BUILD + RUNTIME + VALIDATE


def _garbage_with_matching_manifest(inputs: Inputs) -> None:
    import hashlib
    garbage = os.urandom(3000)
    inputs.plan.write_bytes(garbage)
    inputs.edit_manifest(lambda m: m["plan"].update(size=len(garbage), sha256=hashlib.sha256(garbage).hexdigest()))


MELS = {"nan": lambda: np.full((1, 100, 20), np.nan, np.float32), "inf": lambda: np.full((1, 100, 20), np.inf, np.float32),
        "rank4": lambda: np.zeros((1, 1, 100, 20), np.float32), "80bands": lambda: np.zeros((1, 80, 20), np.float32),
        "zero-frames": lambda: np.zeros((1, 100, 0), np.float32), "batch0": lambda: np.zeros((0, 100, 20), np.float32),
        "int": lambda: np.zeros((1, 100, 20), np.int16), "float64": lambda: speech_mel(30).astype(np.float64),
        "fortran": lambda: np.asfortranarray(speech_mel(30)), "long": lambda: speech_mel(300)}


def resolve(argv: list, inputs: Inputs) -> list[str]:
    """Placeholders in runtime rows: MEL[:kind], OUT, BLOCKED."""
    resolved = []
    for arg in argv:
        if not isinstance(arg, str):
            resolved.append(str(arg))
            continue
        if arg == "MEL":
            arg = inputs.mel(speech_mel(30))
        elif arg.startswith("MEL:"):
            kind = arg[4:]
            if kind == "text":
                arg = inputs.file("mel.npy", b"not numpy at all")
            elif kind == "missing":
                arg = inputs.folder / "none.npy"
            else:
                arg = inputs.mel(MELS[kind]())
        elif arg == "OUT":
            arg = inputs.out / "audio.wav"
        elif arg == "BLOCKED":
            arg = inputs.file("blocker", b"x") / "audio.wav"
        resolved.append(str(arg))
    return resolved


# ---- the table ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def v4_checkpoint(tmp_path_factory, vocoder_v4) -> Path:
    return save_v4_checkpoint(tmp_path_factory.mktemp("ckpt") / "vocoder.pth", vocoder_v4)


@pytest.fixture()
def inputs(tmp_path, onnx_v4, v4_checkpoint, monkeypatch) -> Inputs:
    """The TensorRT-RTX double installed, a plan it built from the v4 export, and copies of the inputs."""
    install_on_cpu(monkeypatch, "tensorrt_rtx-1")
    folder = tmp_path / "in"
    folder.mkdir()
    onnx_copy = folder / "v4.onnx"
    onnx_copy.write_bytes(onnx_v4.read_bytes())
    plan = build_plan(onnx_copy, "v4", "fp32", folder / "v4.fp32.plan", backend="tensorrt_rtx",
                      settings=settings_with_small_profiles())
    checkpoint = folder / "vocoder.pth"
    checkpoint.write_bytes(v4_checkpoint.read_bytes())
    return Inputs(folder, onnx_copy, checkpoint, plan)


def files_under(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_hostile_input(row: Row, inputs: Inputs, monkeypatch, capsys):
    argv = resolve(row.argv(inputs), inputs)
    if row.damage is not None:
        row.damage(inputs, monkeypatch)
    before = files_under(inputs.folder)
    code = run_main(row.main, argv)
    err = capsys.readouterr().err.strip().splitlines()
    added = {name for name in files_under(inputs.folder) if name not in before and not name.endswith(".runtime-cache")}
    if row.expect == "accepted":
        assert code == 0, err
        samples = _wav_samples(inputs.out / "audio.wav")
        mel = np.load(argv[argv.index("--mel") + 1])
        assert samples == mel.shape[-1] * 480
        return
    assert not added, f"files left behind: {sorted(added)}"
    if row.expect == "interrupted":
        assert code == 130 and len(err) == 1 and "interrupted" in err[0], err
        return
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert row.says in err[0], err[0]


def _wav_samples(path: Path) -> int:
    import wave
    with wave.open(str(path)) as wav:
        return wav.getnframes()


# ---- the same inputs through the runtime's Python API --------------------------------------------


@pytest.mark.parametrize("kind, says", [("nan", "NaN or Inf"), ("rank4", "(batch, n_mels, frames)"), ("80bands", "80 bands"),
                                        ("zero-frames", "empty"), ("batch0", "empty"), ("int", "floating point")])
def test_python_api_refuses_bad_mels(kind, says, inputs):
    with runtime.load_engine(inputs.plan) as engine, pytest.raises(runtime.RuntimeUserError, match=says.replace("(", r"\(")
                                                                     .replace(")", r"\)")):
        engine(MELS[kind]())


@pytest.mark.parametrize("damage, exception", [
    (lambda i: i.manifest().write_text("{", encoding="utf-8"), runtime.RuntimeUserError),
    (lambda i: i.edit_manifest(lambda m: m.pop("profiles")), runtime.RuntimeUserError),
    (lambda i: i.plan.write_bytes(truncated(i.plan)), runtime.EngineError),
    (lambda i: _garbage_with_matching_manifest(i), runtime.EngineError),
], ids=["manifest-not-json", "manifest-without-profiles", "plan-truncated", "plan-garbage"])
def test_python_api_refuses_broken_plans(damage, exception, inputs):
    damage(inputs)
    with pytest.raises(exception) as excinfo:
        runtime.load_engine(inputs.plan)
    assert "\n" not in str(excinfo.value)


def test_python_api_accepts_float64_non_contiguous_and_long_mels(inputs):
    from pipeline.onnx_tools import cpu_session, run_audio
    session = cpu_session(inputs.onnx)
    with runtime.load_engine(inputs.plan) as engine:
        mel = speech_mel(30)
        np.testing.assert_array_equal(engine(mel.astype(np.float64)), run_audio(session, mel))
        wide = np.repeat(mel, 2, axis=2)[:, :, ::2]  # a strided view
        np.testing.assert_array_equal(engine(wide), run_audio(session, np.ascontiguousarray(wide)))
        assert engine(speech_mel(300)).shape == (1, 1, 300 * 480)


def test_real_ctrl_c_during_an_export_leaves_nothing(tmp_path):
    """A real SIGINT to `python -m export` while it works: exit 130, no output and no temporary file."""
    output = tmp_path / "v4.onnx"
    process = subprocess.Popen([sys.executable, "-m", "export", "--vocoder", "v4", "--output", str(output)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".v4.onnx.*.tmp")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # well inside torch's export, which writes to that temporary file
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, (process.returncode, stderr)
    assert stderr.strip().splitlines()[-1].startswith("error: interrupted")
    assert list(tmp_path.iterdir()) == []
